"""vremd.data.draw.write_image: images written atomically, and an image OpenCV cannot write is an error naming the file
(cv2.imwrite would only return False)."""

import cv2
import numpy as np
import pytest

from vremd.data.draw import write_image


def test_write_image_round_trips_by_extension(tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (36, 64, 3), dtype=np.uint8)
    assert write_image(tmp_path / "a" / "x.png", image) == tmp_path / "a" / "x.png"
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "a" / "x.png")), image)
    y, x = np.mgrid[0:36, 0:64]
    smooth = np.stack([x * 3, y * 5, np.full_like(x, 90)], -1).astype(np.uint8)  # (36, 64, 3) gradients
    write_image(tmp_path / "x.jpg", smooth, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert np.abs(cv2.imread(str(tmp_path / "x.jpg")).astype(int) - smooth).mean() < 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "x.jpg"]  # no temp files


@pytest.mark.parametrize("name", ["x.notanimage", "x"])
def test_an_image_opencv_cannot_encode_is_an_error_naming_the_file(tmp_path, name):
    with pytest.raises(OSError, match=f"^{tmp_path / name}: OpenCV cannot encode the image as "):
        write_image(tmp_path / name, np.zeros((4, 4, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []
