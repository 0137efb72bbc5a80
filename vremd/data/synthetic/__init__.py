"""The synthetic PoseTrack-layout dataset: articulated figures (body), drawn frames (render), videos (generate)."""
