"""The offline `multitask_synthetic` benchmark: four task families generated from a seed.

The families mirror the shapes of the real `multitask` benchmark (QQP, Gigaword, SAMSum,
WebNLG, in that order) and, like the reference's rows, their instructions are raw: the
task's input alone, with no task wording (`SYNTHETIC_PHRASING` holds the task sentences of
the "phrased" format). They draw from the same pools of people, cities, countries,
companies, objects and numbers, so that clustering has real work to do. Every response is
short and fully determined by its instruction, so a tiny model can learn it in a few
hundred steps. The difficulty knob `overlap` (`blend`) adds shared material to every input
so that the families are harder to tell apart; at 0 the rows are exactly these.
"""

from __future__ import annotations

import ast
import functools
import math
import random
from collections.abc import Callable

from fedrouter.data.sampling import derived_rng

# The data is the benchmark: it is generated from this fixed seed, while the run seed only
# drives sampling and partitioning.
SYNTHETIC_SEED = 1234
SYNTHETIC_BENCHMARK = "multitask_synthetic"  # the dataset_name of this benchmark
DEFAULT_N_PER_TASK = 2500

# --- Shared vocabulary -------------------------------------------------------------------

FIRST_NAMES = (
    "Anna", "Ben", "Carla", "David", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas",
    "Keiko", "Liam", "Maya", "Nikolai", "Olivia", "Pablo", "Rosa", "Samir", "Tara", "Umar",
    "Vera", "Wei", "Xenia", "Yusuf", "Zoe", "Marco", "Lena", "Omar", "Nora", "Felix",
)  # fmt: skip
LAST_NAMES = (
    "Berg", "Costa", "Novak", "Silva", "Tanaka", "Weber", "Okafor", "Jensen", "Moreau",
    "Rossi", "Kowalski", "Haddad", "Petrov", "Garcia", "Schmidt", "Mensah", "Dubois",
)  # fmt: skip
CITY_COUNTRY = {
    "Paris": "France", "Lyon": "France", "Rome": "Italy", "Milan": "Italy",
    "Berlin": "Germany", "Munich": "Germany", "Madrid": "Spain", "Seville": "Spain",
    "Lisbon": "Portugal", "Porto": "Portugal", "Oslo": "Norway", "Bergen": "Norway",
    "Vienna": "Austria", "Prague": "Czechia", "Warsaw": "Poland", "Krakow": "Poland",
    "Athens": "Greece", "Dublin": "Ireland", "Cairo": "Egypt", "Nairobi": "Kenya",
    "Lagos": "Nigeria", "Tokyo": "Japan", "Osaka": "Japan", "Seoul": "Korea",
    "Lima": "Peru", "Bogota": "Colombia", "Toronto": "Canada", "Sydney": "Australia",
    "Mumbai": "India", "Recife": "Brazil",
}  # fmt: skip
CITIES = tuple(CITY_COUNTRY)
COUNTRIES = tuple(sorted(set(CITY_COUNTRY.values())))
COMPANIES = (
    "Nordlys", "Acme", "Brightway", "Corvid", "Deltaline", "Everpeak", "Fjordtech",
    "Greenfield", "Helios", "Ironbridge", "Juniper", "Kestrel", "Lumina", "Meridian",
    "Northwind", "Orbital", "Pinecrest", "Quanta", "Redwood", "Solace",
)  # fmt: skip
# Every object pluralises with a plain "s", which keeps the templates simple.
OBJECTS = (
    "laptop", "bicycle", "camera", "phone", "lamp", "guitar", "backpack", "umbrella",
    "kettle", "printer", "tablet", "jacket", "helmet", "drone", "speaker", "chair",
    "scooter", "notebook", "heater", "oven",
)  # fmt: skip
PROFESSIONS = (
    "teacher", "engineer", "doctor", "pilot", "chef", "lawyer", "nurse", "architect",
    "journalist", "painter", "farmer", "dentist", "musician", "baker", "editor",
)  # fmt: skip
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
TIMES = (
    "9 am", "10 am", "11 am", "noon", "1 pm", "2 pm", "3 pm", "4 pm", "5 pm", "6 pm",
    "7 pm", "8 pm",
)  # fmt: skip
NUMBERS = tuple(str(n) for n in range(2, 100))


def _an(word: str) -> str:
    """Return `word` with its indefinite article."""
    return ("an " if word[0] in "aeiou" else "a ") + word


def _person(rng: random.Random) -> str:
    """Draw a full name."""
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"


def _join_clauses(clauses: list[str]) -> str:
    """Join clauses as 'a, b and c'."""
    return clauses[0] if len(clauses) == 1 else ", ".join(clauses[:-1]) + " and " + clauses[-1]


Sample = tuple[str, str]  # (instruction, response)

# --- Question pairs (QQP's shape) --------------------------------------------------------

_ENTITY_POOLS: dict[str, Callable[[random.Random], str]] = {
    "city": lambda rng: rng.choice(CITIES),
    "country": lambda rng: rng.choice(COUNTRIES),
    "object": lambda rng: rng.choice(OBJECTS),
    "company": lambda rng: rng.choice(COMPANIES),
    "person": _person,
}

# intent -> (entity kind, topic phrase, paraphrases). The topic phrase is what the response
# names, so the answer is a function of the two questions alone.
_INTENTS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "weather": ("city", "weather in {x}", (
        "What is the weather like in {x}?", "How is the weather in {x} today?",
        "What weather should I expect in {x}?",
    )),
    "route": ("city", "travel to {x}", (
        "How do I get to {x}?", "What is the best way to travel to {x}?",
        "Which route should I take to reach {x}?",
    )),
    "sights": ("city", "sights in {x}", (
        "What should I see in {x}?", "Which places are worth visiting in {x}?",
        "What are the top sights in {x}?",
    )),
    "capital": ("country", "capital of {x}", (
        "What is the capital of {x}?", "Which city is the capital of {x}?",
        "What city serves as the capital of {x}?",
    )),
    "language": ("country", "language of {x}", (
        "What language do people speak in {x}?", "Which language is spoken in {x}?",
        "What is the main language of {x}?",
    )),
    "buy": ("object", "buying {a}", (
        "Where can I buy a cheap {x}?", "Which shop sells a good {x}?",
        "What is the best place to buy {a}?",
    )),
    "repair": ("object", "repairing {a}", (
        "How do I fix a broken {x}?", "How can I repair my {x}?",
        "What is the way to repair {a}?",
    )),
    "job": ("company", "jobs at {x}", (
        "How do I get a job at {x}?", "How can I apply to work at {x}?",
        "What does it take to be hired by {x}?",
    )),
    "founder": ("company", "founder of {x}", (
        "Who founded {x}?", "Who is the founder of {x}?", "Who started the company {x}?",
    )),
    "shares": ("company", "share price of {x}", (
        "What is the share price of {x}?", "How much is one {x} share worth?",
        "What does {x} stock cost today?",
    )),
    "home": ("person", "home of {x}", (
        "Where does {x} live?", "In which city does {x} live?", "Where is {x} living now?",
    )),
    "age": ("person", "age of {x}", (
        "How old is {x}?", "What is the age of {x}?", "How many years old is {x}?",
    )),
}  # fmt: skip


def _fill(template: str, entity: str) -> str:
    """Put an entity (and its article form) into a template."""
    return template.format(x=entity, a=_an(entity))


def _question(rng: random.Random, intent: str, entity: str) -> tuple[str, str]:
    """Draw a paraphrase of `intent` about `entity`; return (question, topic)."""
    _, topic, templates = _INTENTS[intent]
    return _fill(rng.choice(templates), entity), _fill(topic, entity)


def _question_pair(rng: random.Random) -> Sample:
    """Draw two questions that ask the same thing or differ in intent or entity."""
    intent = rng.choice(tuple(_INTENTS))
    kind = _INTENTS[intent][0]
    entity = _ENTITY_POOLS[kind](rng)
    q1, topic1 = _question(rng, intent, entity)
    mode = rng.random()
    if mode < 0.5:  # duplicate: same intent and entity, another wording
        other_intent, other_entity = intent, entity
    elif mode < 0.75:  # hard negative: same intent, another entity
        other_intent, other_entity = intent, _ENTITY_POOLS[kind](rng)
    else:  # hard negative: same entity, another intent on that kind of entity
        same_kind = [name for name, spec in _INTENTS.items() if spec[0] == kind]
        other_intent, other_entity = rng.choice(same_kind), entity
    q2, topic2 = q1, topic1
    while q2 == q1:  # an identical pair says nothing; draw another wording
        q2, topic2 = _question(rng, other_intent, other_entity)
    response = f"duplicate: {topic1}" if topic1 == topic2 else f"different: {topic1} vs {topic2}"
    return f"{q1}-{q2}", response  # QQP's raw form: question1-question2


# --- Facts to sentence (WebNLG's shape) --------------------------------------------------

# property -> (object drawer, clause). Person and company subjects have their own properties.
_PERSON_PROPERTIES: dict[str, tuple[Callable[[random.Random], str], str]] = {
    "birthPlace": (lambda rng: rng.choice(CITIES), "was born in {o}"),
    "residence": (lambda rng: rng.choice(CITIES), "lives in {o}"),
    "occupation": (lambda rng: rng.choice(PROFESSIONS), "works as {ao}"),
    "employer": (lambda rng: rng.choice(COMPANIES), "works for {o}"),
    "citizenship": (lambda rng: rng.choice(COUNTRIES), "is a citizen of {o}"),
    "age": (lambda rng: str(rng.randint(18, 90)), "is {o} years old"),
    "owns": (lambda rng: rng.choice(OBJECTS), "owns {ao}"),
}
_COMPANY_PROPERTIES: dict[str, tuple[Callable[[random.Random], str], str]] = {
    "location": (lambda rng: rng.choice(CITIES), "is based in {o}"),
    "founder": (_person, "was founded by {o}"),
    "product": (lambda rng: rng.choice(OBJECTS), "makes {o}s"),
    "employees": (lambda rng: str(10 * rng.randint(2, 99)), "has {o} employees"),
    "foundingYear": (lambda rng: str(rng.randint(1950, 2020)), "was founded in {o}"),
    "market": (lambda rng: rng.choice(COUNTRIES), "sells in {o}"),
}


def _facts(rng: random.Random) -> Sample:
    """Draw 2-4 triples about one subject and the sentence that states them in order."""
    if rng.random() < 0.6:
        subject, properties = _person(rng), _PERSON_PROPERTIES
    else:
        subject, properties = rng.choice(COMPANIES), _COMPANY_PROPERTIES
    chosen = rng.sample(tuple(properties), rng.randint(2, 4))
    lines, clauses = [], []
    for prop in chosen:
        draw, clause = properties[prop]
        obj = draw(rng)
        lines.append(f"{subject} | {prop} | {obj}")
        clauses.append(clause.format(o=obj, ao=_an(obj)))
    # WebNLG's raw form: the triple list written as a Python list
    return str(lines), f"{subject} {_join_clauses(clauses)}."


# --- Dialogue to summary (SAMSum's shape) ------------------------------------------------

_ACTIVITIES = (
    "meet", "have lunch", "have dinner", "watch a film", "go running", "play tennis",
    "study", "go shopping", "have coffee", "play chess",
)  # fmt: skip
_OPENERS = (
    "Hi {b}, do you want to {act} on {day}?", "{b}, shall we {act} on {day}?",
    "Are you free to {act} on {day}, {b}?", "Would you like to {act} on {day}, {b}?",
)  # fmt: skip
_ASKS = ("Sure, where?", "Yes! Where and when?", "Good idea. Where should we go?")
_PLACE_TIMES = ("How about {place} at {time}?", "Let's say {place} at {time}.",
                "What about {place} at {time}?")  # fmt: skip
_CONFIRMS = ("Perfect, see you there.", "Great, I will be there.", "OK, see you then!")
_FULL_PROPOSALS = (
    "{b}, let's {act} at {place} at {time} on {day}.",
    "Hi {b}! Can we {act} at {place} on {day} at {time}?",
)  # fmt: skip
_COUNTERS = ("I can't make it at {time}, how about {later}?", "{time} is hard for me. {later}?")
_ACCEPTS = ("Fine, {later} then.", "Sure, {later} works.")


def _place(rng: random.Random) -> str:
    """Draw a meeting place, some of them naming a company or a city."""
    generic = ("the station", "the cafe", "the library", "the park", "the gym", "the market")
    kind = rng.random()
    if kind < 0.5:
        return rng.choice(generic)
    if kind < 0.75:
        return f"the {rng.choice(COMPANIES)} office"
    return f"the hotel in {rng.choice(CITIES)}"


def _dialogue(rng: random.Random) -> Sample:
    """Draw a 2-4 turn chat that fixes a plan, and its one-line summary."""
    a, b = rng.sample(FIRST_NAMES, 2)
    slots = {
        "b": b,
        "act": rng.choice(_ACTIVITIES),
        "day": rng.choice(DAYS),
        "place": _place(rng),
        "time": rng.choice(TIMES),
    }
    shape = rng.random()
    if shape < 0.4:  # four turns: propose, ask, place and time, confirm
        turns = [(a, _OPENERS), (b, _ASKS), (a, _PLACE_TIMES), (b, _CONFIRMS)]
    elif shape < 0.7:  # two turns: full proposal, confirm
        turns = [(a, _FULL_PROPOSALS), (b, _CONFIRMS)]
    else:  # three turns: full proposal, counter-offer, accept; the later time holds
        slots["later"] = rng.choice([t for t in TIMES if t != slots["time"]])
        turns = [(a, _FULL_PROPOSALS), (b, _COUNTERS), (a, _ACCEPTS)]
    lines = [f"{who}: {_capitalise(rng.choice(options).format(**slots))}" for who, options in turns]
    time = slots.get("later", slots["time"])
    summary = f"{a} and {b} will {slots['act']} at {slots['place']} at {time} on {slots['day']}."
    return "\n".join(lines), summary


def _capitalise(text: str) -> str:
    """Upper-case the first character only."""
    return text[:1].upper() + text[1:]


# --- News sentence to headline (Gigaword's shape) ----------------------------------------

# event -> (sentence paraphrases, headline). Slots: c/c2 companies, p person, y city,
# k/k2 countries, o object, n number, d day.
_EVENTS: dict[str, tuple[tuple[str, ...], str]] = {
    "factory": ((
        "{c} said on {d} that it will open a new factory in {y}, creating {n} jobs.",
        "{c} plans to build a factory in {y} that will employ {n} people, it said on {d}.",
    ), "{c} to open factory in {y}"),
    "profit": ((
        "{c} reported a quarterly profit of {n} million dollars on {d}, beating forecasts.",
        "Quarterly profit at {c} rose to {n} million dollars, the firm said on {d}.",
    ), "{c} profit rises to {n} million dollars"),
    "takeover": ((
        "{c} has agreed to buy its rival {c2} for {n} million dollars, the firms said on {d}.",
        "{c2} will be taken over by {c} in a deal worth {n} million dollars, it was said on {d}.",
    ), "{c} to buy {c2} for {n} million dollars"),
    "prices": ((
        "The price of {o}s in {k} rose by {n} percent last month, data showed on {d}.",
        "Shoppers in {k} paid {n} percent more for {o}s last month, figures showed on {d}.",
    ), "{o} prices in {k} up {n} percent"),
    "marathon": ((
        "{p} won the {y} marathon on {d}, finishing {n} seconds ahead of the others.",
        "Runner {p} took first place in the {y} marathon on {d} by {n} seconds.",
    ), "{p} wins {y} marathon"),
    "election": ((
        "{p} was elected mayor of {y} on {d} with {n} percent of the vote.",
        "Voters in {y} chose {p} as their new mayor on {d}, giving the winner {n} percent.",
    ), "{p} elected mayor of {y}"),
    "trade": ((
        "{k} and {k2} signed a trade deal in {y} on {d} to cut tariffs by {n} percent.",
        "Leaders of {k} and {k2} met in {y} on {d} and agreed a trade deal.",
    ), "{k} and {k2} sign trade deal"),
    "recall": ((
        "{c} is recalling {n} thousand {o}s sold in {k} after safety complaints, it said on {d}.",
        "After safety complaints in {k}, {c} said on {d} it will recall {n} thousand {o}s.",
    ), "{c} recalls {n} thousand {o}s"),
    "storm": ((
        "A storm left {n} thousand homes in {y} without power on {d}, officials said.",
        "Power went out in {n} thousand homes across {y} on {d} after a storm.",
    ), "Storm cuts power to {n} thousand homes in {y}"),
    "strike": ((
        "Workers at the {c} plant in {y} went on strike on {d}, asking for {n} percent more pay.",
        "A strike began on {d} at the {y} plant of {c}, where staff want a {n} percent raise.",
    ), "{c} workers strike in {y}"),
}  # fmt: skip


def _news(rng: random.Random) -> Sample:
    """Draw a news sentence and its headline."""
    sentences, headline = _EVENTS[rng.choice(tuple(_EVENTS))]
    c, c2 = rng.sample(COMPANIES, 2)
    k, k2 = rng.sample(COUNTRIES, 2)
    slots = {
        "c": c, "c2": c2, "k": k, "k2": k2, "p": _person(rng), "y": rng.choice(CITIES),
        "o": rng.choice(OBJECTS), "n": rng.choice(NUMBERS), "d": rng.choice(DAYS),
    }  # fmt: skip
    sentence = rng.choice(sentences).format(**slots)
    return sentence, _capitalise(headline.format(**slots))


# --- The benchmark -----------------------------------------------------------------------

# The synthetic task list, defined once: task name -> sample drawer, in the order of the real
# tasks they stand for (qqp, gigaword, samsum, webnlg).
FAMILIES: dict[str, Callable[[random.Random], Sample]] = {
    "paraphrase_synth": _question_pair,
    "headline_synth": _news,
    "dialogsum_synth": _dialogue,
    "data2text_synth": _facts,
}
SYNTHETIC_TASKS: tuple[str, ...] = tuple(FAMILIES)
# The task sentences of the "phrased" instruction format (the raw format has none).
SYNTHETIC_PHRASING: dict[str, str] = {
    "paraphrase_synth": "Do these two questions ask the same thing?",
    "headline_synth": "Write a headline for this news:",
    "dialogsum_synth": "Summarize this chat:",
    "data2text_synth": "Turn these facts into one sentence:",
}


# --- Difficulty: shared material ---------------------------------------------------------

# The shared pools that the context note cycles through: entities every family uses.
_NOTE_POOLS: tuple[tuple[str, ...], ...] = (
    FIRST_NAMES, CITIES, COMPANIES, DAYS, OBJECTS, COUNTRIES, LAST_NAMES, PROFESSIONS,
)  # fmt: skip
NOTE_WORDS = 16  # entities in the context note at overlap 1
# The task's input sits between these two lines, whole, so it still determines the response.
FRAME_OPEN = "Input:"
FRAME_CLOSE = "End of input."

# task -> the items of a raw input, in order: what the shared form lists one per line.
_ITEMS: dict[str, Callable[[str], list[str]]] = {
    "paraphrase_synth": lambda text: [q + "?" for q in text[:-1].split("?-")],
    "headline_synth": lambda text: [text],
    "dialogsum_synth": lambda text: text.split("\n"),
    "data2text_synth": lambda text: list(ast.literal_eval(text)),
}


def blend(instruction: str, task: str, overlap: float, rng: random.Random) -> str:
    """Return `instruction` with shared material, more of it the higher `overlap` (0: as is).

    Above 0, the input is framed between FRAME_OPEN and FRAME_CLOSE lines, after a context
    note: about `overlap * NOTE_WORDS` entities drawn from the pools all families share. With
    probability `overlap` its items are also written in the shared form, one "- item" line
    each (no question dash join, no list brackets). A row draws the same numbers at every
    knob value, so raising the knob only adds shared material to it.
    """
    shared_form = rng.random() < overlap
    entities = [rng.choice(_NOTE_POOLS[i % len(_NOTE_POOLS)]) for i in range(NOTE_WORDS)]
    # Every row gets the floor or the ceiling of the expected count: the first tokens
    # dominate the base model's mean-pooled embeddings, so a note in some rows and not in
    # others would split the clusters on the note rather than on the task.
    count = math.floor(overlap * NOTE_WORDS + rng.random())
    if overlap == 0.0:
        return instruction
    content = instruction
    if shared_form:
        content = "\n".join(f"- {item}" for item in _ITEMS[task](instruction))
    note = "Note: " + ", ".join(entities[:count]) if count else "Note:"
    return "\n".join((note, FRAME_OPEN, content, FRAME_CLOSE))


def _generate_family(task: str, seed: int, n: int) -> list[dict[str, str]]:
    """Draw `n` rows with distinct instructions for one family."""
    rng = derived_rng(seed, "synthetic", task)
    draw = FAMILIES[task]
    rows: dict[str, str] = {}
    for _ in range(50 * n):  # generous bound; each family has far more than n distinct samples
        if len(rows) == n:
            break
        instruction, response = draw(rng)
        if rows.setdefault(instruction, response) != response:
            raise RuntimeError(f"{task}: one instruction got two responses: {instruction!r}")
    if len(rows) < n:
        raise RuntimeError(f"{task}: only {len(rows)} distinct samples, {n} asked")
    return [{"instruction": i, "response": r, "task": task} for i, r in rows.items()]


def _blend_family(rows: list[dict[str, str]], seed: int, overlap: float) -> list[dict[str, str]]:
    """Return one family's rows with shared material, drawn per row from the seed."""
    blended = []
    for i, row in enumerate(rows):
        rng = derived_rng(seed, "overlap", row["task"], i)
        blended.append({**row, "instruction": blend(row["instruction"], row["task"], overlap, rng)})
    return blended


@functools.lru_cache(maxsize=4)
def _generate_cached(
    seed: int, n_per_task: int, overlap: float = 0.0
) -> tuple[dict[str, str], ...]:
    """Generate every family once per (seed, size, overlap)."""
    rows: list[dict[str, str]] = []
    for task in SYNTHETIC_TASKS:
        family = _generate_family(task, seed, n_per_task)
        rows.extend(_blend_family(family, seed, overlap) if overlap else family)
    return tuple(rows)


def generate_synthetic(
    seed: int = SYNTHETIC_SEED, n_per_task: int = DEFAULT_N_PER_TASK, overlap: float = 0.0
) -> list[dict[str, str]]:
    """Return the synthetic rows, `n_per_task` distinct samples per family, in family order.

    `overlap` in [0, 1] makes the families' inputs harder to tell apart (see `blend`); the
    responses never change, and 0 gives the benchmark as it always was.
    """
    if n_per_task < 1:
        raise ValueError(f"n_per_task must be >= 1, got {n_per_task}")
    if not 0.0 <= overlap <= 1.0:
        raise ValueError(f"overlap must be in [0, 1], got {overlap}")
    return [dict(row) for row in _generate_cached(seed, n_per_task, float(overlap))]


def synthetic_texts(seed: int = SYNTHETIC_SEED, n_per_task: int = DEFAULT_N_PER_TASK) -> list[str]:
    """Return every instruction and every response of the benchmark (overlap 0), as separate
    strings: the tiny model's tokenizer corpus."""
    texts: list[str] = []
    for row in _generate_cached(seed, n_per_task):
        texts.extend((row["instruction"], row["response"]))
    return texts
