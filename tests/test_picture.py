"""The plan's picture: every step a box in its layer, arrows for dependencies, coloured by state."""
from __future__ import annotations

import io
import logging
import math
from collections import Counter
from itertools import combinations

import pytest
from PIL import Image

from bot import picture
from bot.picture import PictureStep, PlanSnapshot, draw, fill_of, render
from swarm.events import PlannedStep, PlanProposed


def snapshot(steps: list[PictureStep]) -> PlanSnapshot:
    return PlanSnapshot(7, "Objective #7 · running", "Launch the product in Japan", tuple(steps))


def step(key: str, state: str, *deps: str, role: str = "researcher") -> PictureStep:
    return PictureStep(key, f"Work on {key} for the launch", role, state, deps, 3.5, "$0.0012")


def one_step() -> list[PictureStep]:
    return [step("brief", "finished", role="writer")]


def five_steps() -> list[PictureStep]:
    # a fan-out (research -> three) and a join (three -> report), one of them failed
    return [step("research", "finished"), step("market", "finished", "research"),
            step("pricing", "failed", "research"), step("legal", "running", "research"),
            step("report", "pending", "market", "pricing", "legal", role="writer")]


def twelve_steps() -> list[PictureStep]:
    states = ["finished", "finished", "running", "waiting_human", "awaiting_approval",
              "failed", "skipped", "pending", "cancelled", "ready", "pending", "pending"]
    steps = [step("s0", states[0])]
    for i in range(1, 12):
        deps = ("s0",) if i < 6 else (f"s{i - 5}", f"s{i - 4}")  # fan-out, then joins
        steps.append(step(f"s{i}", states[i], *deps))
    return steps


def forty_steps() -> list[PictureStep]:
    """A fan-out of ten from one root, each a chain of three, joined twice, then a tail."""
    steps = [step("root", "finished")]
    for b in range(10):
        prev = "root"
        for n in range(3):
            key = f"b{b}n{n}"
            state = "failed" if (b, n) == (4, 1) else \
                "skipped" if b == 4 and n == 2 else "finished" if b < 6 else "running"
            steps.append(step(key, state, prev))
            prev = key
    steps.append(step("join_a", "pending", *[f"b{b}n2" for b in range(5)]))
    steps.append(step("join_b", "waiting_human", *[f"b{b}n2" for b in range(5, 10)]))
    steps += [step("merge", "pending", "join_a", "join_b"),
              step("review", "awaiting_approval", "merge"), step("publish", "pending", "review"),
              step("announce", "cancelled", "publish"), step("retro", "pending", "announce"),
              step("archive", "pending", "retro"), step("thanks", "pending", "merge")]
    assert len(steps) == 40
    return steps


PLANS = {1: one_step, 5: five_steps, 12: twelve_steps, 40: forty_steps}


@pytest.mark.parametrize("size", sorted(PLANS))
def test_each_step_is_a_box_in_its_states_colour(size: int) -> None:
    steps = PLANS[size]()
    drawn = draw(snapshot(steps))
    image = Image.open(io.BytesIO(drawn.png))
    assert image.format == "PNG"
    image.load()  # decodes all of it
    assert image.size[0] <= picture.MAX_WIDTH and image.size[1] <= picture.MAX_HEIGHT
    assert len(drawn.png) < 1_000_000
    boxes = drawn.layout.boxes
    assert set(boxes) == {st.key for st in steps}
    for st in steps:
        box = boxes[st.key]
        assert box.x1 - box.x0 >= picture.MIN_BOX_W  # text still reads at chat width
        assert 0 <= box.x0 and box.x1 <= image.size[0] and box.y1 <= image.size[1]
        inside = image.crop((box.x0 + 3, box.y0 + 3, box.x1 - 3, box.y1 - 3))
        colour, _ = Counter(inside.get_flattened_data()).most_common(1)[0]
        assert colour == fill_of(st.state), (st.key, st.state, colour)
    for a, b in combinations(boxes.values(), 2):
        assert a.x1 < b.x0 or b.x1 < a.x0 or a.y1 < b.y0 or b.y1 < a.y0, (a.key, b.key)


def test_the_states_have_colours_one_can_tell_apart() -> None:
    shown = {label: fill for label, fill in picture.PALETTE.values()}
    assert {"pending", "waiting for a human", "running", "finished", "failed",
            "skipped"} <= set(shown)
    assert len(set(shown.values())) == len(shown)


def test_a_dependency_is_an_arrow_from_an_upper_box_into_a_lower_one() -> None:
    steps = forty_steps()
    drawn = draw(snapshot(steps))
    image = Image.open(io.BytesIO(drawn.png)).convert("RGB")
    boxes = drawn.layout.boxes
    assert len(drawn.layout.edges) == sum(len(st.depends_on) for st in steps)
    ends = {(points[0], points[-1]) for points in drawn.layout.edges}
    for points in drawn.layout.edges:  # each ends in an arrowhead, drawn over the line
        (x0, y0), (x1, y1) = points[-2], points[-1]
        back = 5 / math.hypot(x1 - x0, y1 - y0)
        assert image.getpixel((round(x1 - (x1 - x0) * back), round(y1 - (y1 - y0) * back))) \
            == picture.EDGE
    for st in steps:
        target = boxes[st.key]
        for dep in st.depends_on:
            source = boxes[dep]
            assert source.y1 < target.y0  # layered: what a step waits for is drawn above it
            assert (((source.x0 + source.x1) // 2, source.y1),
                    ((target.x0 + target.x1) // 2, target.y0 - 1)) in ends


def test_a_wide_fan_out_wraps_onto_rows_of_at_most_four() -> None:
    drawn = draw(snapshot(forty_steps()))
    rows = Counter(box.y0 for box in drawn.layout.boxes.values())
    assert max(rows.values()) <= picture.PER_ROW
    assert drawn.layout.width <= picture.MAX_WIDTH


def test_alt_text_lists_every_step_and_its_state() -> None:
    text = draw(snapshot(five_steps())).alt_text
    for phrase in ("research (researcher) Work on research for the launch: finished",
                   "pricing (researcher) Work on pricing for the launch: failed, after research",
                   "report (writer)", "after market, pricing, legal", "5 steps"):
        assert phrase in text
    many = draw(snapshot(forty_steps())).alt_text
    assert len(many) <= picture.ALT_CHARS and many.startswith("Objective #7")


async def test_a_plan_that_cannot_be_drawn_gives_no_picture_and_says_why(
        caplog: pytest.LogCaptureFixture) -> None:
    cycle = [step("a", "pending", "b"), step("b", "pending", "a")]
    with caplog.at_level(logging.WARNING, logger="bot.picture"):
        assert await render(snapshot(cycle)) is None
        assert await render(snapshot([])) is None
    assert "picture.failed" in caplog.text and "cycle" in caplog.text


async def test_rendering_is_bounded_in_time() -> None:
    assert await render(snapshot(forty_steps()), timeout_s=0.0) is None
    drawn = await render(snapshot(forty_steps()))
    assert drawn is not None and drawn.png.startswith(b"\x89PNG")


def test_a_plan_beyond_the_bound_is_drawn_in_part_and_says_so() -> None:
    steps = [step(f"s{i}", "pending", *([f"s{i - 1}"] if i % 10 else [])) for i in range(70)]
    drawn = draw(snapshot(steps))
    assert len(drawn.layout.boxes) == picture.MAX_STEPS
    assert [st.key for st in drawn.layout.not_drawn] == [f"s{i}" for i in range(60, 70)]


def test_a_proposed_plan_shows_every_step_pending_and_which_will_ask_approval() -> None:
    event = PlanProposed(3, 11, 1, "research first", [
        PlannedStep(1, "s1", "Research the market", "researcher", [], False),
        PlannedStep(2, "s2", "Ship the rollout", "developer", ["s1"], True)])
    drawn = draw(picture.from_plan(event, "Launch in Japan"))
    assert drawn.alt_text.startswith("Objective #3 · plan v1 proposed: Launch in Japan. 2 steps")
    assert "s2 (developer) Ship the rollout: pending, asks approval, after s1." in drawn.alt_text
    assert "s1 (researcher) Research the market: pending." in drawn.alt_text
