"""Visual reports as PNGs (plain arrays in, files out; callable from training or ablation code).

* `compare_figure`: two checkpoints side by side on the same frames (the paper's figure 3), joints
  farther than PCKh@0.5 from the GT circled in red when GT exists.
* `sample_figure`: one sample's crops with the human mask, the keypoint mask, the predicted heatmaps and
  the DCA sampling points of one query token.
Images are RGB uint8. Figures are drawn with matplotlib's object API (no pyplot state) and written atomically.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vremd.atomic import atomic_write
from vremd.data.joints import SKELETON
from vremd.eval.posetrack_ap import PCKH_THRESHOLD, head_size
from vremd.frames import FRAME_NAMES


@dataclass(frozen=True)
class GroundTruth:
    """GT persons of one frame, aligned with the predicted persons (person p predicts GT person p)."""

    joints_xy: np.ndarray  # (P, J, 2) image pixels
    visible: np.ndarray  # (P, J) > 0 where annotated
    head_size: np.ndarray  # (P,) pixels: poseval's head size (see head_size_from_box)


def head_size_from_box(bbox_head_xywh) -> float:
    """poseval's PCKh normaliser (`head_size`) of an (x, y, w, h) head box."""
    _, _, w, h = (float(v) for v in bbox_head_xywh)
    return float(head_size((w, h)))


def wrong_joints(pred_xy: np.ndarray, gt: GroundTruth) -> np.ndarray:
    """(P, J) bool: annotated joints predicted farther than PCKh@0.5 from the GT ((P, J, 2) predictions)."""
    dist = np.linalg.norm(pred_xy - gt.joints_xy, axis=-1)  # (P, J) pixels
    return (gt.visible > 0) & (dist > PCKH_THRESHOLD * gt.head_size[:, None])


def _save(fig: Figure, out_png: str | Path, dpi: int = 100) -> Path:
    """Render with Agg and write the PNG atomically (temp file, checked non-empty, then rename); returns its path."""
    FigureCanvasAgg(fig)
    return atomic_write(out_png, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"), check_written=True)


def _skeleton(ax, joints_xy: np.ndarray, colour) -> None:
    for a, b in SKELETON:
        ax.plot(joints_xy[[a, b], 0], joints_xy[[a, b], 1], color=colour, linewidth=1.5)
    ax.scatter(joints_xy[:, 0], joints_xy[:, 1], s=8, color=colour, edgecolors="white", linewidths=0.4, zorder=3)


def compare_figure(
    images_rgb: list[np.ndarray], preds_a: list[np.ndarray], preds_b: list[np.ndarray], out_png: str | Path,
    labels: tuple[str, str] = ("A", "B"), gt: list[GroundTruth] | None = None,
    frame_labels: list[str] | None = None,
) -> Path:
    """Side-by-side figure: row per checkpoint, column per frame; wrong joints circled red when `gt` is given.

    Args:
        images_rgb: F frames (H, W, 3) uint8.
        preds_a, preds_b: per frame (P, J, 2) joints in image pixels from checkpoints A and B.
        gt: per frame GT aligned with the predictions, or None (then nothing is circled).
        frame_labels: column titles (default "frame 0", "frame 1", ...).
    """
    F = len(images_rgb)
    if not (len(preds_a) == len(preds_b) == F) or (gt is not None and len(gt) != F):
        raise ValueError(f"compare_figure: {F} frames but {len(preds_a)}/{len(preds_b)} predictions"
                         f"{'' if gt is None else f' and {len(gt)} GT frames'}")
    h, w = images_rgb[0].shape[:2]
    fig = Figure(figsize=(3.2 * F * w / max(h, w) + 0.6, 2 * 3.2 * h / max(h, w) + 0.6))
    axes = fig.subplots(2, F, squeeze=False)
    for row, (label, preds) in enumerate(zip(labels, (preds_a, preds_b))):
        for col in range(F):
            ax = axes[row, col]
            ax.imshow(images_rgb[col])
            wrong_total = 0
            for p, joints in enumerate(np.asarray(preds[col]).reshape(-1, *np.shape(preds[col])[-2:])):
                _skeleton(ax, joints, f"C{p % 10}")
                if gt is not None and p < len(gt[col].head_size):
                    bad = wrong_joints(joints[None], GroundTruth(*(np.asarray(a)[p:p + 1] for a in (
                        gt[col].joints_xy, gt[col].visible, gt[col].head_size))))[0]
                    wrong_total += int(bad.sum())
                    ax.scatter(joints[bad, 0], joints[bad, 1], s=160, facecolors="none", edgecolors="red",
                               linewidths=1.8, zorder=4)
            suffix = f" ({wrong_total} wrong)" if gt is not None else ""
            name = frame_labels[col] if frame_labels is not None else f"frame {col}"
            ax.set_title(f"{label} {name}{suffix}", fontsize=8)
            ax.set_xlim(0, w)
            ax.set_ylim(h, 0)
            ax.axis("off")
    fig.tight_layout()
    return _save(fig, out_png)


def _upsample(mask_n: np.ndarray, grid_hw: tuple[int, int], image_hw: tuple[int, int]) -> np.ndarray:
    """A per-token mask (N,) laid on its (h, w) grid and resized to the image (H, W), nearest cells."""
    grid = np.asarray(mask_n, np.float32).reshape(grid_hw)  # (h, w): tokens are row-major
    return cv2.resize(grid, (image_hw[1], image_hw[0]), interpolation=cv2.INTER_NEAREST)


def sample_figure(
    crops_rgb: np.ndarray, heatmaps: np.ndarray, out_png: str | Path, grid_hw: tuple[int, int],
    human_mask: np.ndarray | None = None, keypoint_mask: np.ndarray | None = None,
    sampling_points: np.ndarray | None = None, joints_xy: np.ndarray | None = None, query: int | None = None,
) -> Path:
    """Heatmap and mask visualisation of one sample.

    Args:
        crops_rgb: (T=3, H, W, 3) uint8 crops, order t-1, t, t+1.
        heatmaps: (J, h, w) predicted heatmaps of the key frame.
        grid_hw: the backbone's token grid (H/p, W/p); masks have N = h*w tokens, row-major.
        human_mask, keypoint_mask: (T, N) per-token masks (rows: human mask, keypoint mask).
        sampling_points: (nh, N, K, 2) DCA locations, (x, y) normalised to [0, 1] over the crop.
        joints_xy: (J, 2) decoded joints in crop pixels, drawn on the heatmap panel.
        query: token whose sampling points are drawn (default: the key frame's highest human-mask token).
    """
    T, H, W, _ = crops_rgb.shape
    rows = [("human mask", human_mask), ("keypoint mask", keypoint_mask)]
    rows = [(name, m) for name, m in rows if m is not None]
    fig = Figure(figsize=(3 * 2.2 * W / H + 0.4, (len(rows) + 1) * 2.4 + 0.4))
    axes = fig.subplots(len(rows) + 1, 3, squeeze=False)
    for r, (name, mask) in enumerate(rows):
        for t in range(T):
            ax = axes[r, t]
            ax.imshow(crops_rgb[t])
            im = ax.imshow(_upsample(mask[t], grid_hw, (H, W)), cmap="magma", alpha=0.45,
                           vmin=float(np.min(mask)), vmax=float(np.max(mask)))  # one scale per row
            ax.set_title(f"{name} {FRAME_NAMES[t]}", fontsize=8)
            ax.axis("off")
        fig.colorbar(im, ax=axes[r, -1], fraction=0.046, pad=0.02)
    key = crops_rgb[T // 2]
    ax = axes[-1, 0]
    ax.imshow(key)
    ax.imshow(cv2.resize(heatmaps.max(axis=0), (W, H), interpolation=cv2.INTER_LINEAR), cmap="jet", alpha=0.5)
    ax.set_title("heatmaps (max over joints)", fontsize=8)
    ax = axes[-1, 1]
    ax.imshow(key)
    if joints_xy is not None:
        _skeleton(ax, np.asarray(joints_xy), "lime")
    ax.set_title("decoded joints", fontsize=8)
    ax = axes[-1, 2]
    ax.imshow(key)
    if sampling_points is not None:
        nh, N, K, _ = sampling_points.shape
        if query is None:
            query = int(np.argmax(human_mask[T // 2])) if human_mask is not None else N // 2
        qy, qx = divmod(query, grid_hw[1])
        ax.scatter([(qx + 0.5) * W / grid_hw[1]], [(qy + 0.5) * H / grid_hw[0]], marker="*", s=120,
                   color="white", edgecolors="black", zorder=4)
        for head in range(nh):
            pts = sampling_points[head, query]  # (K, 2) normalised x, y
            ax.scatter(pts[:, 0] * W, pts[:, 1] * H, s=18, color=f"C{head % 10}", zorder=3,
                       label=f"head {head}")
        ax.legend(fontsize=5, loc="lower right")
        ax.set_title(f"DCA sampling points, token {query}", fontsize=8)
    else:
        ax.set_title("no sampling points (BMD off)", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlim(-0.5, W - 0.5)
        ax.set_ylim(H - 0.5, -0.5)
        ax.axis("off")
    fig.tight_layout()
    return _save(fig, out_png)
