"""A deterministic corpus of varied English sentences, generated from a small grammar.

The memory benchmark needs 100k+ distinct sentences offline. Scanning the installed packages'
docstrings took minutes before the first vector was computed and depended on what happened to
be installed; this grammar makes the same list on every machine in well under a second (a seed
picks the words). Sentences mix a dozen topics and several sentence shapes, so their vectors
spread over the space as team notes do, rather than forming one tight cluster.

    python bench/corpus.py 5      # print five of them
"""
from __future__ import annotations

import random
import sys

TOPICS: dict[str, dict[str, list[str]]] = {
    "operations": {
        "who": ["the on-call engineer", "our SRE team", "the platform group", "the night shift",
                "the release manager", "a contractor from Lisbon", "the database administrator"],
        "thing": ["the billing service", "the staging cluster", "the nightly backup",
                  "the load balancer", "the message queue", "the search index", "the VPN gateway",
                  "the deploy pipeline", "the metrics dashboard", "the certificate renewal"],
        "act": ["restarted", "rolled back", "patched", "migrated", "scaled up", "paused",
                "rebuilt", "audited", "monitored", "throttled"],
        "why": ["after a spike in latency", "because disk usage hit ninety percent",
                "before the holiday freeze", "when the error rate doubled",
                "to cut the cloud bill", "after a failed health check"],
    },
    "finance": {
        "who": ["the finance lead", "our controller", "the procurement office", "the CFO",
                "an external auditor", "the payroll clerk"],
        "thing": ["the quarterly forecast", "the travel budget", "the vendor invoices",
                  "the tax filing", "the expense policy", "the cash flow report",
                  "the hiring plan", "the pricing sheet"],
        "act": ["approved", "rejected", "revised", "reconciled", "signed off on", "questioned",
                "delayed", "summarised"],
        "why": ["ahead of the board meeting", "because the exchange rate moved",
                "after a duplicate payment", "to close the books by Friday",
                "since two suppliers raised prices"],
    },
    "marketing": {
        "who": ["the growth team", "our copywriter", "the brand manager", "a freelance designer",
                "the social media intern", "the events coordinator"],
        "thing": ["the launch campaign", "the newsletter", "the landing page", "the webinar",
                  "the product video", "the customer survey", "the press release",
                  "the trade show booth"],
        "act": ["drafted", "translated", "tested", "scheduled", "cancelled", "redesigned",
                "localised", "promoted"],
        "why": ["for the Japanese market", "after poor click rates", "to reach small clinics",
                "before the spring release", "because the logo changed"],
    },
    "kitchen": {
        "who": ["the head chef", "my grandmother", "the pastry cook", "a visiting baker",
                "the catering crew", "our neighbour"],
        "thing": ["the sourdough starter", "the lemon tart", "the vegetable stock",
                  "the spice rack", "the tomato sauce", "the birthday cake", "the pickled onions"],
        "act": ["tasted", "burned", "froze", "seasoned", "reheated", "served", "garnished",
                "simmered"],
        "why": ["for the Sunday lunch", "because the oven ran hot", "after the market closed",
                "to feed twenty guests", "since the recipe called for saffron"],
    },
    "travel": {
        "who": ["a tired backpacker", "the tour guide", "our travel agent", "two students",
                "the flight attendant", "a family of five"],
        "thing": ["the night train", "the mountain hostel", "the ferry ticket",
                  "the museum pass", "the rental car", "the hotel booking", "the border crossing"],
        "act": ["missed", "booked", "changed", "recommended", "complained about", "photographed",
                "cancelled", "found"],
        "why": ["during the storm", "because of a strike", "on the way to Kyoto",
                "after the bridge closed", "to save a day in Porto"],
    },
    "science": {
        "who": ["the lab technician", "a doctoral student", "the research group",
                "our statistician", "the principal investigator", "a visiting professor"],
        "thing": ["the protein sample", "the telescope data", "the soil survey",
                  "the control group", "the climate model", "the microscope slides",
                  "the gene sequencer"],
        "act": ["calibrated", "measured", "replicated", "discarded", "published", "reanalysed",
                "contaminated", "labelled"],
        "why": ["after the freezer failed", "to confirm the first result",
                "because the reviewers asked", "before the grant deadline",
                "when the readings drifted"],
    },
    "sports": {
        "who": ["the goalkeeper", "our coach", "the youth team", "a marathon runner",
                "the referee", "the physiotherapist"],
        "thing": ["the training plan", "the final match", "the season tickets",
                  "the injury report", "the team bus", "the relay race", "the new stadium"],
        "act": ["postponed", "won", "lost", "reviewed", "practised for", "celebrated",
                "criticised", "prepared"],
        "why": ["in the pouring rain", "after a late penalty", "because the pitch flooded",
                "to qualify for the cup", "despite a sprained ankle"],
    },
    "garden": {
        "who": ["the gardener", "my sister", "the allotment club", "a retired teacher",
                "the park ranger"],
        "thing": ["the apple trees", "the compost heap", "the rose bed", "the greenhouse",
                  "the herb garden", "the hedge", "the pond pump"],
        "act": ["pruned", "watered", "planted", "moved", "fenced", "repaired", "mulched"],
        "why": ["before the first frost", "because slugs ate the seedlings",
                "after a dry summer", "to attract more bees", "when the soil warmed up"],
    },
    "legal": {
        "who": ["the general counsel", "our compliance officer", "a junior associate",
                "the privacy team", "the notary"],
        "thing": ["the supplier contract", "the data processing agreement", "the trademark",
                  "the lease renewal", "the court filing", "the consent form"],
        "act": ["reviewed", "amended", "witnessed", "challenged", "archived", "renewed"],
        "why": ["under the new regulation", "before the deadline lapsed",
                "because a clause was ambiguous", "after the customer objected"],
    },
    "support": {
        "who": ["the support desk", "a frustrated customer", "our account manager",
                "the help centre writer", "the escalation team"],
        "thing": ["the refund request", "the password reset", "the bug report",
                  "the onboarding guide", "the outage notice", "the feature request"],
        "act": ["answered", "escalated", "closed", "reopened", "documented", "prioritised"],
        "why": ["within an hour", "after three reminders", "because the app crashed on login",
                "to keep the renewal", "when the queue finally cleared"],
    },
}
WHEN = ["on Monday", "last night", "this morning", "in March", "over the weekend",
        "yesterday afternoon", "two weeks ago", "at dawn", "during the audit", "before lunch",
        "in the second quarter", "on a rainy Thursday", "late on Friday", "at the end of May"]
HOW = ["quietly", "in a hurry", "with great care", "for the third time", "without telling anyone",
       "against advice", "as planned", "ahead of schedule", "at the last minute", "reluctantly"]
THEN = ["and nobody noticed", "which saved a lot of money", "so the team could go home",
        "and wrote a short note about it", "but the problem came back", "and asked for feedback",
        "which annoyed the neighbours", "and everything worked again", "so we must check it",
        "and moved on to the next task"]
SHAPES = [
    "{When}, {who} {act} {thing} {why}.",
    "{Who} {act} {thing} {how} {when}, {then}.",
    "{Thing} was {act} by {who} {why}.",
    "Did {who} really say that {thing} was {act} {when}?",
    "Remember that {who} {act} {thing} {why}, {then}.",
    "{When} {who} {act} {thing} {how}.",
    "Note: {thing} must not be {act} again {why}.",
    "{Who} thinks {thing} should be {act} {when}, {then}.",
]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def sentences(n: int, seed: int = 7) -> list[str]:
    """`n` distinct sentences, the same ones (in the same order) for the same seed."""
    rng = random.Random(seed)
    topics = list(TOPICS.values())
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        words = rng.choice(topics)
        pick = {"who": rng.choice(words["who"]), "thing": rng.choice(words["thing"]),
                "act": rng.choice(words["act"]), "why": rng.choice(words["why"]),
                "when": rng.choice(WHEN), "how": rng.choice(HOW), "then": rng.choice(THEN)}
        pick |= {k.capitalize(): _cap(v) for k, v in pick.items()}
        text = rng.choice(SHAPES).format(**pick)
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


if __name__ == "__main__":
    print("\n".join(sentences(int(sys.argv[1]) if len(sys.argv) > 1 else 10)))
