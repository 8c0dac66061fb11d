"""Data: sources (digits, folder, tfds, synthetic), the grain host loader, device augmentation."""
