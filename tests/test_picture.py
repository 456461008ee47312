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
from swarm.services.objectives import Swarm


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


def test_alt_text_lists_every_step_its_state_time_and_cost() -> None:
    text = draw(snapshot(five_steps())).alt_text
    for phrase in ("research (researcher) Work on research for the launch: finished, 3.5s, "
                   "$0.0012.",
                   "pricing (researcher) Work on pricing for the launch: failed, 3.5s, $0.0012, "
                   "after research",
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


def team_snapshot(team_steps: list[PictureStep]) -> PlanSnapshot:
    """Five steps whose `legal` step is done by team #9, with `team_steps` as its plan."""
    steps = five_steps()
    steps[3] = PictureStep("legal", "Check the law for the launch", "researcher",
                           "waiting_team", ("research",), 12.0, "$0.0040", team=True,
                           inside=picture.TeamPicture(9, "running", tuple(team_steps)))
    return snapshot(steps)


def colour_of(image: Image.Image, box: picture.Box) -> tuple[int, ...]:
    inside = image.crop((box.x0 + 2, box.y0 + 2, box.x1 - 2, box.y1 - 2))
    return Counter(inside.get_flattened_data()).most_common(1)[0][0]  # type: ignore[no-any-return]


def test_a_team_step_is_a_box_with_its_teams_steps_inside_in_their_colours() -> None:
    team = [step("t1", "finished"), step("t2", "finished", "t1"), step("t3", "running", "t1"),
            step("t4", "awaiting_approval", "t1"), step("t5", "failed", "t1"),
            step("t6", "skipped", "t5"), step("t7", "pending", "t2", "t3", "t4")]
    drawn = draw(team_snapshot(team))
    image = Image.open(io.BytesIO(drawn.png)).convert("RGB")
    boxes, chips = drawn.layout.boxes, drawn.layout.chips
    legal = boxes["legal"]
    assert set(chips) == {"legal"} and [c.key for c in chips["legal"]] == [t.key for t in team]
    # the team's box: taller than a plain box, still clear of the others, in its own colour
    assert legal.y1 - legal.y0 > boxes["market"].y1 - boxes["market"].y0
    for a, b in combinations(boxes.values(), 2):
        assert a.x1 < b.x0 or b.x1 < a.x0 or a.y1 < b.y0 or b.y1 < a.y0, (a.key, b.key)
    first = min(c.y0 for c in chips["legal"])
    assert colour_of(image, picture.Box("top", "", legal.x0 + 1, legal.y0 + 1, legal.x1 - 1,
                                        first - 1)) == fill_of("waiting_team")
    for other in ("research", "market", "pricing", "report"):
        assert colour_of(image, boxes[other]) == fill_of(boxes[other].state)
    # inside it, each of the team's steps is a small box in its state's colour, by layer
    by_key = {c.key: c for c in chips["legal"]}
    for t in team:
        chip = by_key[t.key]
        assert legal.x0 < chip.x0 and chip.x1 < legal.x1 and legal.y0 < chip.y0 < chip.y1 < \
            legal.y1
        assert colour_of(image, chip) == fill_of(t.state), (t.key, t.state)
        for dep in t.depends_on:
            assert by_key[dep].y1 < chip.y0, "a team's step is drawn below what it waits for"
    for a, b in combinations(chips["legal"], 2):
        assert a.x1 < b.x0 or b.x1 < a.x0 or a.y1 < b.y0 or b.y1 < a.y0, (a.key, b.key)
    assert ("legal (researcher) Check the law for the launch: its team works, 2/7 done, 12.0s, "
            "$0.0040, after research.") in drawn.alt_text
    assert "Its team #9's steps: t1 finished, t2 finished, t3 running, t4 waiting for a human, " \
        "t5 failed, t6 skipped, t7 pending." in drawn.alt_text


def test_a_big_team_is_drawn_in_part_inside_a_box_of_bounded_height() -> None:
    chain = [step(f"t{i}", "pending", *([f"t{i - 1}"] if i else [])) for i in range(30)]
    drawn = draw(team_snapshot(chain))
    legal = drawn.layout.boxes["legal"]
    assert len(drawn.layout.chips["legal"]) == picture.MAX_CHIP_ROWS  # one a row: a chain
    assert legal.y1 - legal.y0 == picture.TEAM_TOP + picture.MAX_CHIP_ROWS * (
        picture.CHIP_H + picture.CHIP_GAP) + picture.TEAM_BOTTOM
    assert "t29 pending." in drawn.alt_text or drawn.alt_text.endswith("…")


async def test_the_picture_of_a_plan_with_a_team_shows_the_teams_steps_as_they_stand(
        swarm: Swarm) -> None:
    from tests.test_teams import GOAL, approved_and_run, team_of

    view = await approved_and_run(swarm)  # the team waits for its risky step's approval
    team = team_of(view)
    drawn = draw(picture.from_view(view))
    image = Image.open(io.BytesIO(drawn.png)).convert("RGB")
    chips = {c.key: c for c in drawn.layout.chips["s3"]}
    assert {k: colour_of(image, c) for k, c in chips.items()} == \
        {t.key: fill_of(t.state) for t in team.steps}
    assert {t.state for t in team.steps} == {"finished", "awaiting_approval"}
    assert colour_of(image, drawn.layout.boxes["s1"]) == fill_of("finished")
    assert f"Its team #{team.id}'s steps: s1 finished" in drawn.alt_text
    assert GOAL in drawn.alt_text
    proposed = picture.from_plan(PlanProposed(view.id, 1, 1, "", [
        PlannedStep(1, "s1", "Draft", "writer", [], False, team=True)]), GOAL)
    assert "Draft: pending, a team of its own." in draw(proposed).alt_text
