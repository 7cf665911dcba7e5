"""Data: decoding, sampling, transforms, audio features, datasets."""
