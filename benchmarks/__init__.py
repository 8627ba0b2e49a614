"""Speed and memory of glassvit against timm and the official implementations, as ratios measured in one run."""
