"""Analysis views over built models (Swin shifted-window masks, receptive fields, ...); no UI imports."""
