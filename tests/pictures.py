"""What a test reads off a posted picture of the plan: the colour each step's box is filled with."""
from __future__ import annotations

import io
from collections import Counter

from PIL import Image

from bot import picture


def states_drawn(png: bytes, snapshot: picture.PlanSnapshot) -> dict[str, tuple[int, ...]]:
    """The colour that fills each step's box in the posted picture (laid out as it was)."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    boxes = picture.layout(snapshot, top=picture.HEADING_H).boxes
    return {key: Counter(image.crop((b.x0 + 3, b.y0 + 3, b.x1 - 3, b.y1 - 3))
                         .get_flattened_data()).most_common(1)[0][0]
            for key, b in boxes.items()}
