"""tile_images (the figure-2 sample grid) puts image r * columns + c in block (r, c)."""

import torch

from fastmi.train.plots import tile_images


def test_tile_images_places_each_image_in_its_block():
    rows, columns, h, w = 3, 4, 2, 5
    images = torch.randn(rows * columns, 1, h, w)
    grid = tile_images(images, rows)
    assert grid.shape == (rows * h, columns * w)
    for r in range(rows):
        for c in range(columns):
            torch.testing.assert_close(grid[r * h:(r + 1) * h, c * w:(c + 1) * w], images[r * columns + c, 0],
                                       rtol=0, atol=0)
