"""The offline rehearsal provider: a deterministic model registered with litellm.

It answers from the text of the prompt alone, so the demo, the tests and the benchmarks run
with no key and no network through the same litellm code path as a real provider.
Behaviour a test or a demo can rely on:
- a plan (response_format PlanSpec) of five steps derived from the goal; the goal marker
  `[malformed-plan]` makes every plan cyclic, `[malformed-plan-once]` only the first one;
- the goal marker `[team]` plans the draft (s3) as a team of its own: a child objective whose
  goal is the step's instructions (markers gone), so the team plans five plain steps;
- a step whose title starts with "Draft" comes back with a TODO on its first attempt, which
  the critic (response_format CriticVerdict) rejects; `[reject-always]` in the goal keeps the
  TODO on every attempt;
- a step whose instructions say "Ask the humans" calls the ask_humans tool until an answer is
  in its prompt;
- `[latency:N]` anywhere in a prompt makes that call take N milliseconds instead of the
  provider's default (a slow step, for rehearsals and benchmarks); past the call's timeout it
  raises litellm.Timeout, as a real provider would;
- the troubleshooter (response_format TroubleshootDecision) retries a failed step with new
  instructions the first time, replaces it by two smaller steps the second time, and asks the
  humans after that; `[troubleshoot:retry|replan|ask]` in the goal forces one action. Under
  `[reject-always]` a Draft step still keeps its TODO after a retry, but not once split up or
  once the humans have answered;
- a plan's constraints are read from the goal's wording: "in <Place>" is
  the market, "for <people>" the audience, "organic only", "without ...", "no ..." and
  "only ..." are hard constraints, "<number> sign-ups|leads|users|..." the success measure;
- the grounding judge (response_format GroundingVerdict) rules a constraint violated when a
  recent output breaks it in a sentence that does not negate it (paid media against "organic
  only", the words of a "without"/"no" rule, another market than the stated one);
- `[drift-after:N]` in the goal makes every step after the plan's N-th break the goal's first
  hard constraint (or its market) in on-topic text, until a grounding correction is in the
  step's instructions;
- with a FaultInjector (THREADSWARM_OFFLINE_FAULTS) a call may raise litellm's RateLimitError,
  InternalServerError or Timeout, be slow, or return invalid JSON to a structured call.
"""
from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import litellm
from litellm import CustomLLM, ModelResponse

from swarm.llm.faults import BAD_JSON, FaultInjector

PROVIDER = "offline"
_MARKERS = ("OBJECTIVE", "GOAL", "STEP", "INSTRUCTIONS", "INPUTS FROM EARLIER STEPS",
            "SHARED NOTES", "ANSWERS FROM THE HUMANS", "CRITIQUE OF YOUR LAST ATTEMPT",
            "OUTPUT TO REVIEW", "MEMORY", "VALIDATION ERRORS", "TASK", "ROLE", "ERROR",
            "LAST OUTPUT", "EARLIER INTERVENTIONS", "ROLES", "FEEDBACK ON THE REJECTED PLAN",
            "CONSTRAINTS", "PLAN", "DECISIONS", "RECENT OUTPUTS")
_LATENCY = re.compile(r"\[latency:(\d+(?:\.\d+)?)\]")
_FORCED = re.compile(r"\[troubleshoot:(retry|replan|ask)\]")
_SECTION = re.compile(r"^({}):\s?".format("|".join(map(re.escape, _MARKERS))), re.MULTILINE)


def sections(text: str) -> dict[str, str]:
    """Split a prompt into its marked sections."""
    found: dict[str, str] = {}
    matches = list(_SECTION.finditer(text))
    for m, nxt in zip(matches, matches[1:] + [None], strict=False):
        end = nxt.start() if nxt else len(text)
        found[m.group(1)] = text[m.end():end].strip()
    return found


def _words(text: str) -> int:
    return max(1, len(text.split()))


def _subject(goal: str) -> str:
    return re.sub(r"\[[a-z\-:0-9]+\]", "", goal).strip().rstrip(".") or "the objective"


def make_plan(goal: str, repaired: bool, feedback: str = "") -> dict[str, Any]:
    subject = _subject(goal)
    ask = "ask" in goal.lower().split() or "?" in goal
    steps: list[dict[str, Any]] = [
        {"key": "s1", "title": "Research the context", "role": "researcher",
         "instructions": f"Collect the facts, market data and constraints relevant to: {subject}.",
         "depends_on": []},
        {"key": "s2", "title": "Analyse audience and constraints", "role": "analyst",
         "instructions": f"Identify the audience, channels, budget and success metrics for: "
                         f"{subject}." + (" Ask the humans for the budget." if ask else ""),
         "depends_on": []},
        {"key": "s3", "title": "Draft the deliverable", "role": "writer",
         "instructions": f"Write the main deliverable for: {subject}, using the research and "
                         f"the analysis.", "depends_on": ["s1", "s2"]},
        {"key": "s4", "title": "Review risks and compliance", "role": "security_reviewer",
         "instructions": f"Review the draft for security, privacy and legal risks: {subject}.",
         "depends_on": ["s3"]},
        {"key": "s5", "title": "Prepare the rollout", "role": "developer",
         "instructions": f"Prepare the rollout plan and the configuration to ship: {subject}.",
         "depends_on": ["s3"], "needs_approval": True},
    ]
    if "[team]" in goal:
        steps[2]["team"] = True
    broken = "[malformed-plan]" in goal or ("[malformed-plan-once]" in goal and not repaired)
    if broken:
        steps[0]["depends_on"] = ["s3"]  # a cycle: s1 -> s3 -> s1
    revised = f"Revised for the team's feedback ({feedback}). " if feedback else ""
    return {"rationale": f"{revised}Research and analysis run in parallel, then the draft, then "
                         f"review and rollout in parallel, for: {subject}.", "steps": steps}


_MARKET = re.compile(r"\bin ((?:the )?[A-Z][A-Za-z]+(?: [A-Z][A-Za-z]+)?)")
_AUDIENCE = re.compile(r"\bfor ((?:[a-z][a-z\-]* ){0,3}(?:teams|developers|customers|users|"
                       r"students|parents|buyers|clinics|schools|restaurants|shops|smbs|"
                       r"enterprises|retirees|nurses|teachers|owners))\b")
_HARD = re.compile(r"\b(organic[- ]only|without [^,.;\[]+|no [a-z][^,.;\[]+|only [^,.;\[]+)",
                   re.IGNORECASE)
_SUCCESS = re.compile(r"\b(\d[\d,.]*\s*%?\s*(?:more )?(?:sign-?ups|leads|users|customers|"
                      r"downloads|bookings|orders|trials|uptime|retention)[^,.;\[]*)",
                      re.IGNORECASE)
_DRIFT = re.compile(r"\[drift-after:(\d+)\]")
_CORRECTED = "Correction from the grounding check"
MARKETS = ("Japan", "Germany", "France", "Brazil", "India", "China", "Korea", "Spain", "Italy",
           "Canada", "Mexico", "Australia", "the United States", "the UK", "the Netherlands",
           "Poland", "Sweden", "Kenya", "Nigeria", "Indonesia", "Vietnam")
_PAID = re.compile(r"\bpaid (?:ads?|search|social|media|campaigns?|placements?|promotion)|"
                   r"\bad spend\b|\bsponsored\b|\bboosted posts?\b|\bPPC\b|"
                   r"\bads budget\b|\bad budget\b|\bbuy(?:ing)? (?:ads|traffic)\b",
                   re.IGNORECASE)
_NEGATION = re.compile(r"\b(?:no|not|never|without|avoid|instead of|rather than|zero)\b",
                       re.IGNORECASE)
_STOP = frozenset("with from that this than into their them they your ours only without "
                  "reducing any the and for".split())


def constraints_of(goal: str) -> dict[str, Any]:
    text = _subject(goal)
    market = _MARKET.search(text)
    audience = _AUDIENCE.search(text)
    success = _SUCCESS.search(text)
    return {"market": market.group(1) if market else "",
            "audience": audience.group(1) if audience else "", "scope": "",
            "hard": [m.group(1).strip() for m in _HARD.finditer(text)],
            "success": success.group(1).strip() if success else ""}


def _sentences(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"(?<=[.!?;])\s+|\n+", text) if p.strip()]


def _breaks(rule: str, sentence: str) -> bool:
    """Whether `sentence` (not negating itself) breaks the hard constraint `rule`."""
    if _NEGATION.search(sentence):
        return False
    if "organic" in rule.lower():
        return _PAID.search(sentence) is not None
    words = [w for w in re.findall(r"[a-z]{4,}", rule.lower()) if w not in _STOP]
    if rule.lower().startswith(("without ", "no ")) and words:
        return all(re.search(rf"\b{re.escape(w[:5])}", sentence.lower()) for w in words[:2])
    return False


def judge_verdict(prompt: str) -> dict[str, Any]:
    s = sections(prompt)
    constraints = [ln[2:].strip() for ln in s.get("CONSTRAINTS", "").splitlines()
                   if ln.startswith("- ")]
    outputs = s.get("RECENT OUTPUTS", "")
    sentences = _sentences(outputs)
    rulings: list[dict[str, Any]] = []
    for c in constraints:
        name, _, value = c.partition(": ")
        status, evidence = "not_addressed", ""
        if name == "must":
            broken = next((x for x in sentences if _breaks(value, x)), None)
            status, evidence = ("violated", broken) if broken else ("satisfied", "")
        elif name == "market" and value:
            other = next((x for x in sentences for m in MARKETS
                          if m.lower() != value.lower() and re.search(rf"\b{m}\b", x)
                          and value.lower() not in x.lower() and not _NEGATION.search(x)), None)
            status, evidence = ("violated", other) if other else (
                ("satisfied", value) if value.lower() in outputs.lower() else ("not_addressed",
                                                                                ""))
        rulings.append({"constraint": c, "status": status, "evidence": evidence[:300]})
    violated = [r for r in rulings if r["status"] == "violated"]
    if not violated:
        return {"aligned": True, "score": 0.9, "constraints": rulings, "drifted": "",
                "correction": ""}
    first = violated[0]
    rule = first["constraint"].partition(": ")[2] or first["constraint"]
    return {"aligned": False, "score": round(max(0.0, 0.6 - 0.2 * len(violated)), 2),
            "constraints": rulings,
            "drifted": f"the work breaks '{rule}': \"{first['evidence']}\"",
            "correction": f"Keep to '{rule}' in every remaining step; drop what breaks it."}


def _drift_line(goal: str) -> str:
    """On-topic text that breaks the goal's first hard constraint, or else its market."""
    found = constraints_of(goal)
    for rule in found["hard"]:
        if "organic" in rule.lower():
            return ("To reach the target sooner, put a $5,000 paid search and paid social "
                    "budget behind the launch week.")
        if rule.lower().startswith(("without ", "no ")):
            words = [w for w in re.findall(r"[a-z]{4,}", rule.lower()) if w not in _STOP]
            return f"The quickest route is to accept some {' '.join(words[:2])} for this."
    market = found["market"] or "Japan"
    other = next(m for m in MARKETS if m.lower() != market.lower())
    return f"Start with {other} first, where the same playbook converts faster."


def _drifts(objective: str, title: str, instructions: str) -> bool:
    marked = _DRIFT.search(objective)
    if marked is None or _CORRECTED in instructions:
        return False
    first = [st["title"] for st in make_plan("", False)["steps"][:int(marked.group(1))]]
    return title not in first


def critic_verdict(prompt: str) -> dict[str, Any]:
    output = sections(prompt).get("OUTPUT TO REVIEW", "")
    if "TODO" in output:
        return {"approved": False,
                "critique": "The output still contains a TODO placeholder; finish that part."}
    return {"approved": True, "critique": "Complete and on target."}


def worker_reply(prompt: str, tools: list[dict[str, Any]]) -> dict[str, Any]:
    s = sections(prompt)
    tool_names = {t.get("function", {}).get("name") for t in tools}
    answers = s.get("ANSWERS FROM THE HUMANS", "(none)")
    if "Ask the humans" in s.get("INSTRUCTIONS", "") and answers == "(none)" \
            and "ask_humans" in tool_names:
        call = {"id": "call_ask_1", "type": "function",
                "function": {"name": "ask_humans",
                             "arguments": json.dumps({"question": "What budget should we plan "
                                                                  "for?"})}}
        return {"role": "assistant", "content": None, "tool_calls": [call]}
    title, goal = s.get("STEP", "the step"), _subject(s.get("OBJECTIVE", ""))
    inputs = [line[2:].split(":", 1)[0] for line in s.get("INPUTS FROM EARLIER STEPS", "")
              .splitlines() if line.startswith("- ")]
    body = [f"## {title}", f"For: {goal}."]
    if inputs:
        body.append("Builds on: " + ", ".join(inputs) + ".")
    if answers != "(none)":
        said = " ".join(ln[3:] for ln in answers.splitlines() if ln.startswith("A: "))
        body.append(f"Taking into account the team's answer: {said or answers}")
    body += [f"1. {s.get('INSTRUCTIONS', '').split('.')[0]}.",
             "2. Key findings and decisions are listed with their reasons.",
             "3. Next actions, owners and a date for each."]
    if _drifts(s.get("OBJECTIVE", ""), title, s.get("INSTRUCTIONS", "")):
        body.append(_drift_line(s.get("OBJECTIVE", "")))
    elif _CORRECTED in s.get("INSTRUCTIONS", ""):
        body.append("Following the grounding correction, every action keeps to the stated "
                    "constraints.")
    revising = s.get("CRITIQUE OF YOUR LAST ATTEMPT", "(none)") != "(none)"
    stuck = "[reject-always]" in s.get("OBJECTIVE", "") and answers == "(none)"
    if title.startswith("Draft") and (not revising or stuck):
        body.append("TODO: localise the call to action.")
    elif revising:
        body.append("Revised after review: every placeholder is filled in.")
    return {"role": "assistant", "content": "\n".join(body)}


def troubleshoot_decision(prompt: str) -> dict[str, Any]:
    s = sections(prompt)
    title, role = s.get("STEP", "the step")[:150], s.get("ROLE", "writer")
    instructions, error = s.get("INSTRUCTIONS", ""), s.get("ERROR", "").split("\n")[0][:200]
    earlier = [ln for ln in s.get("EARLIER INTERVENTIONS", "").splitlines() if ln.startswith("- ")]
    forced = _FORCED.search(s.get("OBJECTIVE", ""))
    action = forced.group(1) if forced else ("retry", "replan", "ask")[min(len(earlier), 2)]
    decision: dict[str, Any] = {"action": action, "reason": "", "instructions": "", "steps": [],
                                "question": ""}
    if action == "retry":
        decision["reason"] = "A fresh attempt with sharper instructions should get past this."
        decision["instructions"] = (f"{instructions} Keep the output focused and complete: no "
                                    f"TODO or placeholder may remain.")
    elif action == "replan":
        decision["reason"] = "The step failed again as a whole; two smaller steps are safer."
        decision["steps"] = [
            {"key": "a", "title": f"Outline — {title}", "role": role, "depends_on": [],
             "instructions": f"Outline every part the step needs. The step: {instructions}"},
            {"key": "b", "title": f"Complete — {title}", "role": role, "depends_on": ["a"],
             "instructions": f"Write each outlined part in full. The step: {instructions}"}]
    else:
        decision["action"] = "ask_humans"
        decision["reason"] = "Only the team can say how to unblock this step."
        decision["question"] = (f"'{title}' keeps failing ({error}). What should it contain, "
                                f"or should we drop it?")
    return decision


def marked_latency(messages: list[dict[str, Any]]) -> float | None:
    """The `[latency:N]` marker of a prompt, in seconds (None: no marker)."""
    for m in messages:
        if (found := _LATENCY.search(str(m.get("content") or ""))) is not None:
            return float(found.group(1)) / 1000
    return None


def _seconds(timeout: Any) -> float | None:
    return float(timeout) if isinstance(timeout, int | float) and timeout > 0 else None


class OfflineProvider(CustomLLM):
    """litellm custom provider `offline/...`; `latency_s` is slept per call (like a network)."""

    def __init__(self, latency_s: float = 0.0, faults: FaultInjector | None = None) -> None:
        super().__init__()
        self.latency_s = latency_s
        self.faults = faults

    def respond(self, messages: list[dict[str, Any]], optional_params: dict[str, Any]) -> dict:
        prompt = "\n".join(str(m.get("content") or "") for m in messages)
        fmt = (optional_params.get("response_format") or {}).get("json_schema", {}).get("name")
        if fmt == "PlanSpec":
            found = sections(prompt)
            plan = make_plan(found.get("GOAL", ""), repaired="VALIDATION ERRORS" in prompt,
                             feedback=found.get("FEEDBACK ON THE REJECTED PLAN", ""))
            plan["constraints"] = constraints_of(found.get("GOAL", ""))
            return {"role": "assistant", "content": json.dumps(plan)}
        if fmt == "CriticVerdict":
            return {"role": "assistant", "content": json.dumps(critic_verdict(prompt))}
        if fmt == "GroundingVerdict":
            return {"role": "assistant", "content": json.dumps(judge_verdict(prompt))}
        if fmt == "TroubleshootDecision":
            return {"role": "assistant", "content": json.dumps(troubleshoot_decision(prompt))}
        user: dict[str, Any] = next(
            (m for m in reversed(messages) if m.get("role") == "user"), {})
        reply = worker_reply(str(user.get("content") or ""), optional_params.get("tools") or [])
        if any(m.get("role") == "tool" for m in messages) and reply.get("tool_calls"):
            reply = {"role": "assistant", "content": "Waiting for the humans' answer."}
        return reply

    def latency_for(self, messages: list[dict[str, Any]]) -> float:
        marked = marked_latency(messages)
        return self.latency_s if marked is None else marked

    async def acompletion(self, model: str, messages: list, *args: Any, **kwargs: Any) -> Any:
        timeout = _seconds(kwargs.get("timeout"))
        fault = await self.faults.before_call(model, timeout) if self.faults else None
        if (latency := self.latency_for(messages)) > 0:
            if timeout is not None and latency > timeout:
                await asyncio.sleep(timeout)
                raise litellm.Timeout(f"no answer within {timeout}s", model=model,
                                      llm_provider=PROVIDER)
            await asyncio.sleep(latency)
        params = kwargs.get("optional_params") or {}
        message = self.respond(messages, params)
        if fault == "bad_json" and params.get("response_format"):
            message = {"role": "assistant", "content": BAD_JSON}
        prompt_tokens = sum(_words(str(m.get("content") or "")) for m in messages)
        completion_tokens = _words(message.get("content") or json.dumps(message.get("tool_calls")))
        return ModelResponse(
            model=model, created=int(time.time()),
            choices=[{"index": 0, "message": message,
                      "finish_reason": "tool_calls" if message.get("tool_calls") else "stop"}],
            usage={"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                   "total_tokens": prompt_tokens + completion_tokens})

    def completion(self, model: str, messages: list, *args: Any, **kwargs: Any) -> Any:
        return asyncio.run(self.acompletion(model, messages, *args, **kwargs))


_provider = OfflineProvider()


def register(latency_s: float, faults: FaultInjector | None = None) -> OfflineProvider:
    """Register the provider with litellm once; later calls only change latency and faults."""
    _provider.latency_s, _provider.faults = latency_s, faults
    if not any(p.get("provider") == PROVIDER for p in litellm.custom_provider_map):
        litellm.custom_provider_map.append({"provider": PROVIDER, "custom_handler": _provider})
        litellm.register_model({"offline/rehearsal": {
            "litellm_provider": PROVIDER, "mode": "chat", "max_tokens": 8192,
            "input_cost_per_token": 0.15e-6, "output_cost_per_token": 0.60e-6,
            "cache_read_input_token_cost": 0.075e-6, "cache_creation_input_token_cost": 0.15e-6}})
    return _provider
