"""Worked example: semantic segmentation of procedurally generated scenes with a tiny U-Net.

``data`` generates the scenes (64x64 RGB, background plus rectangles, ellipses and triangles), ``model`` holds
``TinyUNet`` (returns ``(logits, aux_logits)``), ``task`` the loaders/loss/metric the pipeline calls, and
``train`` trains the checkpoint ``unet.pt`` from scratch on one CPU thread.
"""
