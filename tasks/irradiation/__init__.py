"""Ion impacts on 2D sheets: batched cascades, damage analysis and sputtering statistics."""
