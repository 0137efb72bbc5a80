"""The download stage: fetch, verify and unpack a PoseTrack release (or make the synthetic one) into data/raw."""
