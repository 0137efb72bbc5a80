"""The frame axis: every model input is 3 frames of one person, ordered t-1, t, t+1 (t = the key frame).

Data (`vremd.data.crops` cuts the neighbours), the model (`vremd.model`: which slice is the key frame,
which are the motion's ends) and figures (`vremd.predict.figures` titles) index this one axis. It lives
here, above both, because `vremd.data` and `vremd.model` may not import each other. A leaf: imports
nothing from vremd.
"""

PREV, KEY, NEXT = 0, 1, 2  # index of frame t-1, the key frame t and frame t+1 on the frame axis
NUM_FRAMES = 3  # T: length of the frame axis
FRAME_OFFSETS: tuple[int, ...] = (-1, 0, 1)  # frame number relative to t, per index
FRAME_NAMES: tuple[str, ...] = ("t-1", "t", "t+1")  # per index, for titles and messages
