"""Facts about each known dataset (classes in label order, split layout, expected counts), one JSON file each."""
