"""The arrays source (``python -m ingest arrays``): folders of .npy/.npz/.pt samples."""
