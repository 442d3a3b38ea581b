"""A worked example of a custom task: an anchor-free single-stage detector (CenterNet-style) on generated scenes.

``data`` makes the scenes, ``model`` the TinyDetector, ``task`` the interface the pipeline calls (loaders, loss,
metric), ``train`` trains the checkpoint ``detector.pt``.
"""
