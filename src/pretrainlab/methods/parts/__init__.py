"""Parts several methods share: momentum teachers, queues, frozen teachers, view presets, reconstruction grids."""
