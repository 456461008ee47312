"""A picture of a plan: steps as boxes by layer, dependencies as arrows, coloured by state (PNG).

igraph's Sugiyama layout places the steps (layers, crossing reduction, routes for the edges that
skip layers); Pillow draws them. Both install as wheels, with no system binary (graphviz, cairo)
and no system font: Pillow >= 10.1 ships a scalable default font. Rendering is presentation:
it reads a neutral snapshot of the plan and knows nothing of the database or of a platform.
A step done by a team of its own (a child objective) is a taller box with the team's steps inside,
as small boxes in their layers, each coloured by its state.
"""
from __future__ import annotations

import asyncio
import functools
import io
import itertools
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import igraph
from PIL import Image, ImageDraw, ImageFont

from swarm.events import Event, ObjectiveFinished, PictureRequested, PlanProposed
from swarm.redact import redact
from swarm.store.views import ObjectiveView, StepView

log = logging.getLogger(__name__)

MAX_STEPS = 60  # drawn; the rest are named in a line below (and in the alt text)
PER_ROW = 4  # boxes side by side in one row: a wider layer wraps onto the next rows
BOX_W, BOX_H, MIN_BOX_W = 240, 78, 150
GAP_X, GAP_Y, MARGIN = 24, 36, 20
# PER_ROW boxes: about chat width at 1x on a laptop. Arrows that skip rows take columns of their
# own, so a plan with many of them is drawn with narrower boxes, then wider, up to MAX_WIDTH.
CHAT_WIDTH = PER_ROW * (BOX_W + GAP_X) + 2 * MARGIN
MAX_WIDTH, MAX_HEIGHT = 3200, 8000  # a plan that would need more is refused, not drawn
MAX_VERTICES = 2000  # steps and the bends of the arrows that skip rows
RENDER_TIMEOUT_S = 10.0
ALT_CHARS = 1000  # Slack's limit for a file's alt text
# a team's steps inside its step's box: small boxes in rows by layer, a wide layer wrapping
CHIPS_PER_ROW, MAX_CHIP_ROWS, CHIP_H, CHIP_GAP = 4, 5, 18, 4
TEAM_TOP, TEAM_BOTTOM = 42, 24  # a team's box: key and role, one line of title; its status

# state -> (legend label, fill); the label also shows in each box, so colour is never the only cue
WAITING = "waiting for a human"
PALETTE: dict[str, tuple[str, tuple[int, int, int]]] = {
    "pending": ("pending", (226, 232, 240)),
    "ready": ("pending", (226, 232, 240)),
    "awaiting_approval": (WAITING, (253, 230, 138)),
    "waiting_human": (WAITING, (253, 230, 138)),
    "waiting_team": ("its team works", (165, 243, 252)),
    "running": ("running", (147, 197, 253)),
    "finished": ("finished", (134, 239, 172)),
    "failed": ("failed", (252, 165, 165)),
    "skipped": ("skipped", (216, 180, 254)),
    "cancelled": ("cancelled", (214, 211, 209)),
}
UNKNOWN_FILL = (255, 255, 255)
INK, EDGE, FRAME, BACKGROUND = (15, 23, 42), (100, 116, 139), (71, 85, 105), (255, 255, 255)


@dataclass(frozen=True)
class PictureStep:
    key: str
    title: str
    role: str
    state: str
    depends_on: tuple[str, ...] = ()
    elapsed_s: float | None = None
    cost: str | None = None  # as the status commands show it, e.g. "$0.0012"
    needs_approval: bool = False  # shown on a proposed plan: the step will ask again
    team: bool = False  # done by a team of its own
    inside: TeamPicture | None = None  # that team, once it has a plan: drawn inside the box


@dataclass(frozen=True)
class TeamPicture:
    """A step's team (a child objective): its own steps, drawn inside the step's box."""

    objective_id: int
    state: str
    steps: tuple[PictureStep, ...]

    @property
    def done(self) -> int:
        return sum(st.state == "finished" for st in self.steps)


@dataclass(frozen=True)
class PlanSnapshot:
    """What a picture shows: neutral, built from the event or the view it is posted for."""

    objective_id: int
    heading: str  # e.g. "Objective #3 · plan v1 proposed"
    goal: str
    steps: tuple[PictureStep, ...]


@dataclass(frozen=True)
class Box:
    key: str
    state: str
    x0: int
    y0: int
    x1: int
    y1: int


@dataclass(frozen=True)
class Layout:
    width: int
    height: int
    top: int  # where the first row starts, below the heading
    boxes: dict[str, Box]
    edges: list[list[tuple[int, int]]]  # polylines, source to target
    not_drawn: list[PictureStep] = field(default_factory=list)
    # a team step's key -> its team's steps drawn inside its box (those beyond MAX_CHIP_ROWS
    # are counted in the box, not drawn)
    chips: dict[str, list[Box]] = field(default_factory=dict)


@dataclass(frozen=True)
class Drawing:
    png: bytes
    layout: Layout
    alt_text: str
    filename: str


class PictureError(ValueError):
    """The plan cannot be drawn (too big, or not a DAG): the text shows it instead."""


# -- snapshots ---------------------------------------------------------------------------------
def from_plan(event: PlanProposed, goal: str = "") -> PlanSnapshot:
    """The proposed plan: every step still pending."""
    steps = tuple(PictureStep(st.key, redact(st.title), st.role, "pending", tuple(st.depends_on),
                              needs_approval=st.needs_approval, team=st.team)
                  for st in event.steps)
    return PlanSnapshot(event.objective_id, f"Objective #{event.objective_id} · plan "
                                            f"v{event.version} proposed",
                        redact(goal or event.rationale), steps)


def _step(st: StepView, team: ObjectiveView | None = None) -> PictureStep:
    # a picture is a message too: what it shows is redacted like every text
    inside = TeamPicture(team.id, team.state, tuple(_step(t) for t in team.steps)) \
        if team is not None and team.steps else None
    return PictureStep(st.key, redact(st.title), st.role, st.state, tuple(st.depends_on),
                       st.elapsed_s, st.spend.show_cost() if st.spend.calls else None,
                       team=st.team, inside=inside)


def from_view(view: ObjectiveView) -> PlanSnapshot:
    """The plan as it stands: each step's state, and its time and cost once it has them; a
    team's steps inside its step (a team's own teams show as its steps' states)."""
    steps = tuple(_step(st, view.teams.get(st.id) if st.team else None) for st in view.steps)
    heading = f"Objective #{view.id} · {view.state} · {view.elapsed_s:.0f}s · " \
              f"{view.spend.show_cost()}"
    return PlanSnapshot(view.id, heading, redact(view.goal), steps)


def snapshot_for(event: Event, view: Callable[[int], ObjectiveView | None]
                 ) -> PlanSnapshot | None:
    """The picture an event brings, if any: the plan when it is proposed, the plan with each
    step's outcome, time and cost when the objective ends, and the plan as it stands when
    someone asks. Every adapter posts it its own way (bot/slack, bot/console)."""
    if isinstance(event, PlanProposed):
        current = view(event.objective_id)
        return from_plan(event, current.goal if current else "")
    if isinstance(event, ObjectiveFinished | PictureRequested):
        current = view(event.objective_id)
        if current is None or not current.steps:
            return None
        # a team reports one summary line; its picture is asked for with `status ID --picture`
        if isinstance(event, ObjectiveFinished) and current.parent_id is not None:
            return None
        return from_view(current)
    return None


# -- layout ------------------------------------------------------------------------------------
def _layers(steps: Sequence[PictureStep]) -> list[int]:
    """Longest-path layer of each step (a step sits one row below its last dependency)."""
    index = {st.key: i for i, st in enumerate(steps)}
    layer: dict[int, int] = {}
    for start in range(len(steps)):
        stack, on_path = [start], set()
        while stack:
            i = stack[-1]
            if i in layer:
                stack.pop()
                continue
            on_path.add(i)
            deps = [index[d] for d in steps[i].depends_on if d in index]
            todo = [d for d in deps if d not in layer]
            if any(d in on_path for d in todo):
                raise PictureError("the plan's dependencies form a cycle")
            if todo:
                stack.extend(todo)
                continue
            layer[i] = 1 + max((layer[d] for d in deps), default=-1)
            on_path.discard(i)
            stack.pop()
    return [layer[i] for i in range(len(steps))]


def _rows(layers: list[int], per_row: int = PER_ROW) -> list[int]:
    """Row of each step: a layer wider than `per_row` wraps onto consecutive rows."""
    by_layer: dict[int, list[int]] = {}
    for i, lay in enumerate(layers):
        by_layer.setdefault(lay, []).append(i)
    rows, next_row = [0] * len(layers), 0
    for lay in sorted(by_layer):
        members = by_layer[lay]
        for n, i in enumerate(members):
            rows[i] = next_row + n // per_row
        next_row += math.ceil(len(members) / per_row)
    return rows


Point = tuple[float, float]
# Least distance, in columns, between two things side by side in a row: two boxes, a box and an
# arrow passing by, two arrows.
_APART = {(True, True): 1.0, (True, False): 0.6, (False, True): 0.6, (False, False): 0.12}


def _spaced(nodes: list[Point], routes: list[list[Point]]) -> tuple[list[Point],
                                                                     list[list[Point]]]:
    """igraph's layering and its order within each row, spaced so that nothing overlaps:
    igraph 1.0 may place two vertices of a layer closer than `hgap`, even at one x."""
    items: dict[float, list[tuple[float, int, bool, tuple[int, int]]]] = {}
    for i, (x, y) in enumerate(nodes):
        items.setdefault(y, []).append((x, 0, True, (i, -1)))
    for e, route in enumerate(routes):
        for j, (x, y) in enumerate(route):
            items.setdefault(y, []).append((x, 1, False, (e, j)))
    nodes, routes = list(nodes), [list(r) for r in routes]
    for y, row in items.items():
        row.sort()
        placed: list[float] = []
        for n, (x, _, real, _ref) in enumerate(row):
            placed.append(x if n == 0 else max(x, placed[-1] + _APART[row[n - 1][2], real]))
        shift = (sum(x for x, *_ in row) - sum(placed)) / len(row)  # stays where igraph put it
        for (_, _, real, (a, b)), x in zip(row, placed, strict=True):
            if real:
                nodes[a] = (x + shift, y)
            else:
                routes[a][b] = (x + shift, y)
    return nodes, routes


def _sugiyama(rows: list[int], pairs: list[tuple[int, int]]
              ) -> tuple[list[Point], list[list[Point]]]:
    """igraph's layered layout of the steps in their rows, and the bends of each arrow.

    An arrow that skips rows passes through vertices of our own, one per row skipped, so that
    igraph lays out a proper layered graph: with the layers given, igraph 1.0 routes such edges
    wrongly (and crashed on some plans with 60 steps) when it adds the dummy vertices itself."""
    layers, chains = list(rows), []
    for src, dst in pairs:
        chain = [src]
        for row in range(rows[src] + 1, rows[dst]):
            layers.append(row)
            chain.append(len(layers) - 1)
        chains.append([*chain, dst])
    if len(layers) > MAX_VERTICES:
        raise PictureError(f"the plan's arrows skip {len(layers) - len(rows)} rows")
    graph = igraph.Graph(n=len(layers), edges=[(a, b) for chain in chains
                                               for a, b in itertools.pairwise(chain)],
                         directed=True)
    coords = [(float(x), float(y)) for x, y in graph.layout_sugiyama(layers=layers).coords]
    return coords[:len(rows)], [[coords[v] for v in chain[1:-1]] for chain in chains]


def _chip_rows(team: TeamPicture | None) -> list[int]:
    """Row of each of a team's steps inside its box (a step below those it waits for)."""
    return _rows(_layers(team.steps), CHIPS_PER_ROW) if team is not None else []


def _box_h(st: PictureStep) -> int:
    rows = _chip_rows(st.inside)
    if not rows:
        return BOX_H
    shown = min(max(rows) + 1, MAX_CHIP_ROWS)
    return max(BOX_H, TEAM_TOP + shown * (CHIP_H + CHIP_GAP) + TEAM_BOTTOM)


def _chips(box: Box, team: TeamPicture) -> list[Box]:
    """The team's steps as small boxes inside the team step's box, in rows by layer."""
    rows, chips = _chip_rows(team), []
    inner = box.x1 - box.x0 - 16
    chip_w = (inner - (CHIPS_PER_ROW - 1) * CHIP_GAP) // CHIPS_PER_ROW
    column: Counter[int] = Counter()
    for st, row in zip(team.steps, rows, strict=True):
        if row >= MAX_CHIP_ROWS:
            continue
        x0 = box.x0 + 8 + column[row] * (chip_w + CHIP_GAP)
        y0 = box.y0 + TEAM_TOP + row * (CHIP_H + CHIP_GAP)
        column[row] += 1
        chips.append(Box(st.key, st.state, x0, y0, x0 + chip_w, y0 + CHIP_H))
    return chips


def layout(snapshot: PlanSnapshot, *, top: int = 0) -> Layout:
    """Where each box and arrow goes, in pixels, for a picture whose heading takes `top`."""
    steps, not_drawn = list(snapshot.steps[:MAX_STEPS]), list(snapshot.steps[MAX_STEPS:])
    keys = {st.key: i for i, st in enumerate(steps)}
    pairs = [(keys[d], i) for i, st in enumerate(steps) for d in st.depends_on if d in keys]
    rows = _rows(_layers(steps))
    coords, routes = _spaced(*_sugiyama(rows, pairs))
    xs = [x for x, _ in coords] + [p[0] for r in routes for p in r]
    left, columns = min(xs, default=0.0), max(xs, default=0.0) - min(xs, default=0.0) + 1
    col_w = max(MIN_BOX_W + GAP_X, min(BOX_W + GAP_X, (CHAT_WIDTH - 2 * MARGIN) / columns))
    box_w = int(col_w - GAP_X)
    width = int(2 * MARGIN + columns * col_w)
    # a row is as tall as its tallest box: a team's, with the team's steps inside
    row_h = [BOX_H] * (max(rows, default=0) + 1)
    for st, row in zip(steps, rows, strict=True):
        row_h[row] = max(row_h[row], _box_h(st))
    row_top = list(itertools.accumulate([top] + [h + GAP_Y for h in row_h]))
    height = row_top[-1] - GAP_Y + MARGIN
    if width > MAX_WIDTH or height > MAX_HEIGHT:
        raise PictureError(f"the picture would be {width}x{height} pixels")

    def centre(x: float, y: float) -> tuple[int, int]:
        row = int(round(y))
        return int(MARGIN + (x - left + 0.5) * col_w), row_top[row] + row_h[row] // 2

    boxes, chips = {}, {}
    for i, st in enumerate(steps):
        (cx, cy), half = centre(*coords[i]), _box_h(st) // 2
        boxes[st.key] = Box(st.key, st.state, cx - box_w // 2, cy - half,
                            cx + box_w // 2, cy - half + _box_h(st))
        if st.inside is not None and st.inside.steps:
            chips[st.key] = _chips(boxes[st.key], st.inside)
    edges = []
    for (src, dst), route in zip(pairs, routes, strict=True):
        a, b = boxes[steps[src].key], boxes[steps[dst].key]
        middle = [centre(p[0], p[1]) for p in route]
        # the arrowhead's tip just touches the box, whose frame is drawn over the line's end
        edges.append([((a.x0 + a.x1) // 2, a.y1), *middle, ((b.x0 + b.x1) // 2, b.y0 - 1)])
    return Layout(width, height, top, boxes, edges, not_drawn, chips)


# -- drawing -----------------------------------------------------------------------------------
@functools.cache
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _fit(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: float) -> str:
    """`text` cut with an ellipsis to fit `width` pixels."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "…") > width:
        text = text[:-1]
    return text.rstrip() + "…"


def _wrap(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: float,
          lines: int) -> list[str]:
    out: list[str] = []
    words = text.split()
    while words and len(out) < lines:
        line = words.pop(0)
        while words and font.getlength(f"{line} {words[0]}") <= width:
            line = f"{line} {words.pop(0)}"
        out.append(line)
    if words:
        out[-1] = _fit(f"{out[-1]} {' '.join(words)}", font, width)
    return [_fit(line, font, width) for line in out]


def _duration(seconds: float) -> str:
    return f"{seconds:.1f}s" if seconds < 60 else f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"


def fill_of(state: str) -> tuple[int, int, int]:
    return PALETTE.get(state, ("", UNKNOWN_FILL))[1]


def label_of(state: str) -> str:
    return PALETTE.get(state, (state, UNKNOWN_FILL))[0]


def _arrow(draw: ImageDraw.ImageDraw, points: list[tuple[int, int]]) -> None:
    draw.line(points, fill=EDGE, width=2, joint="curve")
    (x0, y0), (x1, y1) = points[-2], points[-1]
    angle = math.atan2(y1 - y0, x1 - x0)
    head = [(x1, y1)] + [(int(x1 - 9 * math.cos(angle + s)), int(y1 - 9 * math.sin(angle + s)))
                         for s in (0.45, -0.45)]
    draw.polygon(head, fill=EDGE)


def _facts(st: PictureStep) -> list[str]:
    """What a box says under its title, after the state: its team's count, time, cost, approval
    (the team's number is in the box's top line)."""
    team = st.inside
    facts = [f"{team.done}/{len(team.steps)} done"] if team else \
        ["a team of its own"] if st.team else []
    facts += [_duration(st.elapsed_s)] if st.elapsed_s is not None else []
    facts += [st.cost] if st.cost else []
    facts += ["asks approval"] if st.needs_approval else []
    return facts


def _box(draw: ImageDraw.ImageDraw, box: Box, st: PictureStep, chips: list[Box]) -> None:
    small, body = _font(12), _font(14)
    draw.rounded_rectangle((box.x0, box.y0, box.x1, box.y1), radius=6, fill=fill_of(st.state),
                           outline=FRAME, width=2)
    inner = box.x1 - box.x0 - 20
    x, y = box.x0 + 10, box.y0 + 6
    top = f"{st.key} · {st.role}" + (f" · team #{st.inside.objective_id}" if st.inside else "")
    draw.text((x, y), _fit(top, small, inner), font=small, fill=FRAME)
    for n, line in enumerate(_wrap(st.title, body, inner, 1 if chips else 2)):
        draw.text((x, y + 16 + 17 * n), line, font=body, fill=INK)
    for chip in chips:  # the team's steps, each in its state's colour
        draw.rounded_rectangle((chip.x0, chip.y0, chip.x1, chip.y1), radius=3,
                               fill=fill_of(chip.state), outline=FRAME, width=1)
        draw.text((chip.x0 + 4, chip.y0 + 3), _fit(chip.key, small, chip.x1 - chip.x0 - 6),
                  font=small, fill=INK)
    hidden = len(st.inside.steps) - len(chips) if st.inside is not None else 0
    more = [f"+{hidden} not shown"] if hidden > 0 else []
    status = " · ".join([label_of(st.state), *_facts(st), *more])
    draw.text((x, box.y1 - 20), _fit(status, small, inner), font=small, fill=INK)


def _legend(draw: ImageDraw.ImageDraw, states: Sequence[str], y: int) -> None:
    small, x = _font(12), MARGIN
    labels = list(dict.fromkeys(PALETTE[s][0] for s in PALETTE if s in states))
    for label in labels:
        state = next(s for s, (lab, _) in PALETTE.items() if lab == label)
        draw.rectangle((x, y, x + 12, y + 12), fill=fill_of(state), outline=FRAME)
        draw.text((x + 17, y - 1), label, font=small, fill=INK)
        x += 17 + int(small.getlength(label)) + 16


HEADING_H = 72


def draw(snapshot: PlanSnapshot) -> Drawing:
    """The PNG of the snapshot, with the layout it was drawn from. Raises PictureError."""
    if not snapshot.steps:
        raise PictureError("the plan has no steps")
    placed = layout(snapshot, top=HEADING_H)
    extra = 20 if placed.not_drawn else 0
    width = max(placed.width, 420)
    image = Image.new("RGB", (width, placed.height + extra), BACKGROUND)
    pen = ImageDraw.Draw(image)
    title, body = _font(17), _font(14)
    pen.text((MARGIN, 12), _fit(snapshot.heading, title, width - 2 * MARGIN), font=title,
             fill=INK)
    pen.text((MARGIN, 34), _fit(snapshot.goal, body, width - 2 * MARGIN), font=body, fill=FRAME)
    _legend(pen, [t.state for st in snapshot.steps
                  for t in (st, *(st.inside.steps if st.inside else ()))], 54)
    for points in placed.edges:
        _arrow(pen, points)
    steps = {st.key: st for st in snapshot.steps}
    for box in placed.boxes.values():
        _box(pen, box, steps[box.key], placed.chips.get(box.key, []))
    if placed.not_drawn:
        more = f"+{len(placed.not_drawn)} more steps: " + ", ".join(
            st.key for st in placed.not_drawn)
        pen.text((MARGIN, placed.height - 4), _fit(more, body, width - 2 * MARGIN), font=body,
                 fill=FRAME)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return Drawing(out.getvalue(), placed, alt_text(snapshot),
                   f"objective-{snapshot.objective_id}-plan.png")


def alt_text(snapshot: PlanSnapshot) -> str:
    """For screen readers: every step, its state and what it waits for, within ALT_CHARS."""
    counts = Counter(label_of(st.state) for st in snapshot.steps)
    head = (f"{snapshot.heading}: {snapshot.goal}. {len(snapshot.steps)} steps: "
            + ", ".join(f"{n} {label}" for label, n in counts.items()) + ".")
    lines = [head]
    for st in snapshot.steps:
        facts = "".join(f", {fact}" for fact in _facts(st))
        after = f", after {', '.join(st.depends_on)}" if st.depends_on else ""
        lines.append(f"{st.key} ({st.role}) {st.title}: {label_of(st.state)}{facts}{after}.")
        if st.inside is not None:
            lines.append(f"Its team #{st.inside.objective_id}'s steps: " + ", ".join(
                f"{t.key} {label_of(t.state)}" for t in st.inside.steps) + ".")
    text = " ".join(lines)
    if len(text) <= ALT_CHARS:
        return text
    return text[:ALT_CHARS - 1].rsplit(" ", 1)[0] + "…"


# -- off the event loop --------------------------------------------------------------------------
# A thread of its own: a render never takes the default executor's threads (database reads,
# embeddings), and one at a time, since a FreeType font is not to be shared between threads.
_RENDERER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="picture")


async def render(snapshot: PlanSnapshot, *, timeout_s: float = RENDER_TIMEOUT_S
                 ) -> Drawing | None:
    """The picture, drawn in a thread within `timeout_s`; None (logged) when it cannot be: a
    picture is never worth failing or holding up a delivery for."""
    started = time.monotonic()
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout_s):
            drawing = await loop.run_in_executor(_RENDERER, draw, snapshot)
    except Exception as exc:  # a bug in drawing included: the text still says everything
        log.warning("picture.failed objective=%s steps=%d error=%s detail=%s",
                    snapshot.objective_id, len(snapshot.steps), type(exc).__name__,
                    str(exc)[:200])
        return None
    log.info("picture.drawn objective=%s steps=%d bytes=%d ms=%.0f", snapshot.objective_id,
             len(snapshot.steps), len(drawing.png), (time.monotonic() - started) * 1000)
    return drawing
