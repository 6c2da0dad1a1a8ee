"""Structured-output prompt sets made by code from a seed: json-extract (facts out of a passage, as JSON that follows
a schema) and tool-calls (pick the one fitting tool among several and fill its arguments), with their checks.

Every expected value is stated in the prompt's own text, so a model can answer exactly; answers are compared as
parsed JSON, not as text.
"""

from __future__ import annotations

import copy
import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from leapdecode.bench.prompts import BenchPrompt

Json = dict[str, Any]
Extract = tuple[str, Json, Json]  # (passage, expected object, its schema)

SHAPES = ("record", "nested", "list")

FIRST = ("Maria", "James", "Aiko", "Omar", "Lena", "Carlos", "Priya", "Tom", "Sofia", "Kwame", "Elena", "David",
         "Mei", "Lucas", "Fatima", "Noah")
LAST = ("Garcia", "Smith", "Tanaka", "Haddad", "Novak", "Rossi", "Patel", "Becker", "Okafor", "Ivanova", "Kim",
        "Larsen", "Dubois", "Silva", "Chen", "Murphy")
CITIES = (("Lisbon", "Portugal"), ("Osaka", "Japan"), ("Toronto", "Canada"), ("Nairobi", "Kenya"), ("Lyon", "France"),
          ("Melbourne", "Australia"), ("Bergen", "Norway"), ("Austin", "United States"), ("Seville", "Spain"),
          ("Krakow", "Poland"), ("Recife", "Brazil"), ("Munich", "Germany"))
NATIONALITIES = ("Portuguese", "Japanese", "Canadian", "Kenyan", "French", "Australian", "Norwegian", "Brazilian")
COMPANIES = ("Northwind Labs", "Bluepeak Systems", "Orchid Foods", "Helios Energy", "Tidewater Logistics",
             "Quartz Analytics", "Maple and Finch", "Ironbridge Tools", "Solstice Media", "Cobalt Robotics")
PRODUCTS = (("wireless headphones", "electronics"), ("espresso machine", "kitchen"), ("standing desk", "office"),
            ("camping tent", "outdoor"), ("smart thermostat", "home"), ("mechanical keyboard", "electronics"),
            ("air purifier", "home"), ("electric kettle", "kitchen"), ("trail backpack", "outdoor"),
            ("desk lamp", "office"))
CATEGORIES = ("electronics", "kitchen", "office", "outdoor", "home")
OCCUPATIONS = ("engineer", "teacher", "nurse", "designer", "chef", "accountant")
GENRES = ("mystery", "fantasy", "biography", "romance", "history", "thriller")
BOOKS = ("The Silent Harbor", "Roots of the Mountain", "A Map of Small Things", "The Glass Orchard", "Winter Lanterns",
         "Letters from Nowhere", "The Last Cartographer", "Salt and Iron")
EVENTS = ("Spring Jazz Festival", "Open Source Summit", "Harvest Food Fair", "Robotics Expo", "Night Marathon",
          "Indie Film Week")
VENUES = ("Riverside Hall", "the Grand Pavilion", "Harbor Arena", "the Old Mill", "Central Exhibition Center")
STREETS = ("Elm Street", "Harbor Road", "Maple Avenue", "King Street", "Station Lane", "Orchard Way")
STATUSES = ("pending", "shipped", "delivered", "cancelled")
ADMISSIONS = ("free", "ticketed", "invite-only")
DISHES = ("lemon garlic pasta", "vegetable risotto", "tomato soup", "cheese omelette", "butter cookies",
          "spinach pie")
INGREDIENTS = (("flour", "grams"), ("sugar", "grams"), ("butter", "grams"), ("milk", "cups"), ("rice", "cups"),
               ("olive oil", "tablespoons"), ("garlic", "cloves"), ("tomatoes", "pieces"), ("onions", "pieces"),
               ("cheese", "grams"), ("spinach", "cups"))
UNITS = ("grams", "cups", "tablespoons", "pieces", "cloves")
MEETINGS = ("budget review", "design sync", "quarterly planning", "hiring panel", "product demo")
TEAMS = ("Falcon", "Aurora", "Granite", "Nimbus", "Harbor")
PROJECTS = ("the new billing service", "the mobile app redesign", "the data warehouse migration",
            "the customer portal")
ROLES = ("lead", "developer", "designer", "tester", "analyst")
CENTS = (19, 25, 49, 75, 95, 99)  # prices keep two decimals when printed: 12.25, never 12.5


def json_extract(n: int = 24, seed: int = 4242) -> list[BenchPrompt]:
    """json-extract: facts out of a short passage as JSON, shapes interleaved (record, nested, list, record, ...)."""
    rng = random.Random(seed)
    counts = dict.fromkeys(SHAPES, 0)
    prompts = []
    for i in range(n):
        shape = SHAPES[i % len(SHAPES)]
        counts[shape] += 1
        passage, answer, schema = rng.choice(_EXTRACTS[shape])(rng)
        prompts.append(BenchPrompt(f"json-extract/{shape}-{counts[shape]:02d}", shape, [_user(_ask(passage, schema))],
                                   answer=json.dumps(answer, sort_keys=True), match="json", schema=schema))
    return prompts


def tool_calls(n: int = 20, seed: int = 4343) -> list[BenchPrompt]:
    """tool-calls: 3-8 offered tools, one of which the message asks for; functions cycle so any first K spread."""
    rng = random.Random(seed)
    order = rng.sample(sorted(FUNCTIONS), len(FUNCTIONS))
    counts = dict.fromkeys(FUNCTIONS, 0)
    prompts = []
    for i in range(n):
        name = order[i % len(order)]
        counts[name] += 1
        message, arguments = FUNCTIONS[name].ask(rng)
        offered = rng.sample([f for f in FUNCTIONS if f != name], rng.randint(2, 7))
        offered.insert(rng.randint(0, len(offered)), name)
        prompts.append(BenchPrompt(f"tool-calls/{name}-{counts[name]:02d}", name, [_user(message)],
                                   answer=json.dumps({"name": name, "arguments": arguments}, sort_keys=True),
                                   match="tool", tools=tuple(tool_definition(f) for f in offered)))
    return prompts


# --- checks ----------------------------------------------------------------------------------------------------------

_FENCE = re.compile(r"^```[A-Za-z]*[ \t]*\n?(.*?)\n?[ \t]*```$", re.DOTALL)


def parse_json(text: str) -> object | None:
    """The answer text as JSON, after stripping whitespace and an optional ```json fence; None if it is not JSON."""
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1).strip()
    try:
        return json.loads(body)
    except ValueError:
        return None


def schema_valid(obj: object, schema: Json) -> bool:
    """Whether `obj` follows the JSON schema (draft 2020-12)."""
    import jsonschema

    return jsonschema.Draft202012Validator(schema).is_valid(obj)


def json_equal(got: object, want: object) -> bool:
    """Equal as parsed JSON: same keys, lists in the same order, numbers by ==, but true is not 1."""
    if isinstance(want, bool) or isinstance(got, bool):
        return type(got) is type(want) and got == want
    if isinstance(want, dict):
        return isinstance(got, dict) and got.keys() == want.keys() and all(json_equal(got[k], want[k]) for k in want)
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(map(json_equal, got, want))
    if isinstance(want, (int, float)):
        return isinstance(got, (int, float)) and got == want
    return type(got) is type(want) and got == want


def answer_correct(match: str, answer: str, text: str) -> bool:
    """A json or tool answer checked: the text parsed, against the expected object; a tool call's arguments may be
    given as a JSON string, as OpenAI's tool calls carry them."""
    got = parse_json(text)
    if match == "tool" and isinstance(got, dict) and isinstance(got.get("arguments"), str):
        got = {**got, "arguments": parse_json(got["arguments"])}
    return got is not None and json_equal(got, json.loads(answer))


# --- schemas ---------------------------------------------------------------------------------------------------------


def _obj(properties: Json) -> Json:
    """A strict object schema: every property required, no others allowed."""
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def _t(kind: str, description: str = "") -> Json:
    return {"type": kind, "description": description} if description else {"type": kind}


def _enum(values: tuple[str, ...], description: str = "") -> Json:
    return {**_t("string", description), "enum": list(values)}


def _array(items: Json, least: int = 1, description: str = "") -> Json:
    return {**_t("array", description), "items": items, "minItems": least}


def _ask(passage: str, schema: Json) -> str:
    return (f"{passage}\n\nExtract the facts from the passage above as JSON. Reply with only a JSON object that "
            f"follows this JSON schema:\n{json.dumps(schema)}")


# --- json-extract: values -------------------------------------------------------------------------------------------


def _name(rng: random.Random) -> str:
    return f"{rng.choice(FIRST)} {rng.choice(LAST)}"


def _names(rng: random.Random, k: int) -> list[str]:
    return [f"{f} {la}" for f, la in zip(rng.sample(FIRST, k), rng.sample(LAST, k))]


def _price(rng: random.Random, low: int, high: int) -> float:
    return round(rng.randint(low, high) + rng.choice(CENTS) / 100, 2)


def _order_id(rng: random.Random) -> str:
    return f"ORD-{rng.randint(10000, 99999)}"


def _date(rng: random.Random, year: int = 2025) -> str:
    return f"{year}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


def _listed(items: list[str]) -> str:
    return ", ".join(items[:-1]) + f" and {items[-1]}"


# --- json-extract: record --------------------------------------------------------------------------------------------


def _person(rng: random.Random) -> Extract:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    age, city, job, member = rng.randint(22, 70), rng.choice(CITIES)[0], rng.choice(OCCUPATIONS), rng.random() < 0.5
    text = (f"{first} {last} is a {age}-year-old {job} who lives in {city}. "
            f"{first} {'is a member of' if member else 'has never joined'} the city's loyalty program.")
    answer = {"name": f"{first} {last}", "age": age, "city": city, "occupation": job, "loyalty_member": member}
    schema = _obj({"name": _t("string"), "age": _t("integer"), "city": _t("string"), "occupation": _enum(OCCUPATIONS),
                   "loyalty_member": _t("boolean")})
    return text, answer, schema


def _product(rng: random.Random) -> Extract:
    (product, category), company = rng.choice(PRODUCTS), rng.choice(COMPANIES)
    price, stock = _price(rng, 15, 400), rng.random() < 0.5
    text = (f"{company} sells the {product} as part of its {category} range. It is priced at ${price}. "
            f"Right now the {product} is {'in stock' if stock else 'out of stock'}.")
    answer = {"product": product, "company": company, "price": price, "in_stock": stock, "category": category}
    schema = _obj({"product": _t("string"), "company": _t("string"), "price": _t("number"), "in_stock": _t("boolean"),
                   "category": _enum(CATEGORIES)})
    return text, answer, schema


def _order(rng: random.Random) -> Extract:
    oid, customer, product = _order_id(rng), _name(rng), rng.choice(PRODUCTS)[0]
    qty, total, status = rng.randint(1, 9), _price(rng, 20, 900), rng.choice(STATUSES)
    text = (f"Order {oid} was placed by {customer} for {qty} units of the {product}. "
            f"The order total is ${total}, and the order is currently {status}.")
    answer = {"order_id": oid, "customer": customer, "quantity": qty, "total": total, "status": status}
    schema = _obj({"order_id": _t("string"), "customer": _t("string"), "quantity": _t("integer"),
                   "total": _t("number"), "status": _enum(STATUSES)})
    return text, answer, schema


def _event(rng: random.Random) -> Extract:
    event, city, year = rng.choice(EVENTS), rng.choice(CITIES)[0], rng.randint(2015, 2025)
    people, admission, sold_out = rng.randint(300, 20000), rng.choice(ADMISSIONS), rng.random() < 0.5
    text = (f"The {year} edition of the {event} took place in {city} and drew {people} attendees. "
            f"Admission was {admission}. {'Every place was sold out' if sold_out else 'Places never sold out'}.")
    answer = {"event": event, "city": city, "year": year, "attendees": people, "admission": admission,
              "sold_out": sold_out}
    schema = _obj({"event": _t("string"), "city": _t("string"), "year": _t("integer"), "attendees": _t("integer"),
                   "admission": _enum(ADMISSIONS), "sold_out": _t("boolean")})
    return text, answer, schema


def _book(rng: random.Random) -> Extract:
    title, author, genre = rng.choice(BOOKS), _name(rng), rng.choice(GENRES)
    pages, rating = rng.randint(120, 640), rng.choice((3.1, 3.4, 3.7, 3.9, 4.2, 4.4, 4.6, 4.8))
    text = f"{title} is a {genre} book by {author}. It runs {pages} pages, and readers rate it {rating} out of 5."
    answer = {"title": title, "author": author, "genre": genre, "pages": pages, "rating": rating}
    schema = _obj({"title": _t("string"), "author": _t("string"), "genre": _enum(GENRES), "pages": _t("integer"),
                   "rating": _t("number")})
    return text, answer, schema


# --- json-extract: nested --------------------------------------------------------------------------------------------


def _resident(rng: random.Random) -> Extract:
    name, age, city = _name(rng), rng.randint(19, 85), rng.choice(CITIES)[0]
    street, postal = f"{rng.randint(2, 240)} {rng.choice(STREETS)}", f"{rng.randint(10000, 99999)}"
    text = f"{name}, aged {age}, lives at {street} in {city}. The postal code there is {postal}."
    answer = {"name": name, "age": age, "address": {"street": street, "city": city, "postal_code": postal}}
    address = _obj({"street": _t("string"), "city": _t("string"), "postal_code": _t("string")})
    return text, answer, _obj({"name": _t("string"), "age": _t("integer"), "address": address})


def _authored(rng: random.Random) -> Extract:
    title, year, genre, author = rng.choice(BOOKS), rng.randint(1960, 2024), rng.choice(GENRES), _name(rng)
    nationality, born = rng.choice(NATIONALITIES), year - rng.randint(25, 60)
    text = (f"{title}, a {genre} book, was published in {year}. "
            f"Its author, {author}, is {nationality} and was born in {born}.")
    answer = {"title": title, "year": year, "genre": genre,
              "author": {"name": author, "nationality": nationality, "born": born}}
    author_schema = _obj({"name": _t("string"), "nationality": _t("string"), "born": _t("integer")})
    return text, answer, _obj({"title": _t("string"), "year": _t("integer"), "genre": _enum(GENRES),
                               "author": author_schema})


def _company(rng: random.Random) -> Extract:
    company, (city, country) = rng.choice(COMPANIES), rng.choice(CITIES)
    founded, staff, public = rng.randint(1950, 2020), rng.randint(12, 9000), rng.random() < 0.5
    text = (f"{company} was founded in {founded} and employs {staff} people. Its headquarters are in {city}, "
            f"{country}. The company is {'publicly traded' if public else 'privately held'}.")
    answer = {"company": company, "founded": founded, "employees": staff, "publicly_traded": public,
              "headquarters": {"city": city, "country": country}}
    return text, answer, _obj({"company": _t("string"), "founded": _t("integer"), "employees": _t("integer"),
                               "publicly_traded": _t("boolean"),
                               "headquarters": _obj({"city": _t("string"), "country": _t("string")})})


def _venue(rng: random.Random) -> Extract:
    event, date, venue, city = rng.choice(EVENTS), _date(rng), rng.choice(VENUES), rng.choice(CITIES)[0]
    seats = rng.choice((800, 1200, 2500, 4000, 6500, 12000))
    text = f"The {event} will be held on {date} at {venue} in {city}. The venue seats {seats} people."
    answer = {"event": event, "date": date, "venue": {"name": venue, "city": city, "capacity": seats}}
    venue_schema = _obj({"name": _t("string"), "city": _t("string"), "capacity": _t("integer")})
    return text, answer, _obj({"event": _t("string"), "date": _t("string", "YYYY-MM-DD"), "venue": venue_schema})


def _shipping(rng: random.Random) -> Extract:
    oid, first, last = _order_id(rng), rng.choice(FIRST), rng.choice(LAST)
    total, express = _price(rng, 10, 600), rng.random() < 0.5
    email = f"{first.lower()}.{last.lower()}@example.com"
    text = (f"Order {oid} belongs to {first} {last}, who can be reached at {email}. The total came to ${total}, "
            f"and the customer chose {'express' if express else 'standard'} shipping.")
    answer = {"order_id": oid, "total": total, "express_shipping": express,
              "customer": {"name": f"{first} {last}", "email": email}}
    return text, answer, _obj({"order_id": _t("string"), "total": _t("number"), "express_shipping": _t("boolean"),
                               "customer": _obj({"name": _t("string"), "email": _t("string")})})


# --- json-extract: list ----------------------------------------------------------------------------------------------


def _recipe(rng: random.Random) -> Extract:
    dish, servings, picked = rng.choice(DISHES), rng.randint(2, 8), rng.sample(INGREDIENTS, rng.randint(2, 4))
    items = [{"name": name, "amount": rng.randint(1, 8) * 25 if unit == "grams" else rng.randint(1, 4), "unit": unit}
             for name, unit in picked]
    needs = _listed([f"{i['amount']} {i['unit']} of {i['name']}" for i in items])
    text = f"This {dish} recipe serves {servings}. You will need {needs}."
    answer = {"recipe": dish, "servings": servings, "ingredients": items}
    item = _obj({"name": _t("string"), "amount": _t("integer"), "unit": _enum(UNITS)})
    return text, answer, _obj({"recipe": _t("string"), "servings": _t("integer"), "ingredients": _array(item)})


def _basket(rng: random.Random) -> Extract:
    oid = _order_id(rng)
    items = [{"product": product, "quantity": rng.randint(1, 5), "unit_price": _price(rng, 5, 300)}
             for product, _ in rng.sample(PRODUCTS, rng.randint(2, 4))]
    lines = _listed([f"{i['quantity']} of the {i['product']} at ${i['unit_price']} each" for i in items])
    text = f"Order {oid} was placed this morning. It contains {lines}."
    item = _obj({"product": _t("string"), "quantity": _t("integer"), "unit_price": _t("number")})
    return text, {"order_id": oid, "items": items}, _obj({"order_id": _t("string"), "items": _array(item)})


def _meeting(rng: random.Random) -> Extract:
    meeting, date, room = rng.choice(MEETINGS), _date(rng), f"{rng.choice('ABCD')}{rng.randint(1, 40)}"
    people = _names(rng, rng.randint(2, 4))
    text = f"The {meeting} is scheduled for {date} in room {room}. The attendees are {_listed(people)}."
    answer = {"meeting": meeting, "date": date, "room": room, "attendees": people}
    return text, answer, _obj({"meeting": _t("string"), "date": _t("string", "YYYY-MM-DD"), "room": _t("string"),
                               "attendees": _array(_t("string"))})


def _trip(rng: random.Random) -> Extract:
    traveler = _name(rng)
    stops = [{"city": city, "nights": rng.randint(1, 6)} for city, _ in rng.sample(CITIES, rng.randint(2, 4))]
    legs = [f"{s['nights']} nights in {s['city']}" for s in stops]
    text = (f"{traveler} is planning a trip. It starts with {', then '.join(legs[:-1])}. "
            f"The trip ends with {legs[-1]}.")
    stop = _obj({"city": _t("string"), "nights": _t("integer")})
    return text, {"traveler": traveler, "stops": stops}, _obj({"traveler": _t("string"), "stops": _array(stop)})


def _team(rng: random.Random) -> Extract:
    team, project = rng.choice(TEAMS), rng.choice(PROJECTS)
    members = [{"name": name, "role": rng.choice(ROLES)} for name in _names(rng, rng.randint(2, 4))]
    roles = _listed([f"{m['name']} works as {m['role']}" for m in members])
    text = f"The {team} team is building {project}. On the team, {roles}."
    answer = {"team": team, "project": project, "members": members}
    member = _obj({"name": _t("string"), "role": _enum(ROLES)})
    return text, answer, _obj({"team": _t("string"), "project": _t("string"), "members": _array(member)})


_EXTRACTS: dict[str, tuple[Callable[[random.Random], Extract], ...]] = {
    "record": (_person, _product, _order, _event, _book),
    "nested": (_resident, _authored, _company, _venue, _shipping),
    "list": (_recipe, _basket, _meeting, _trip, _team),
}


# --- tool-calls ------------------------------------------------------------------------------------------------------

CURRENCIES = ("USD", "EUR", "GBP", "JPY", "CHF", "CAD", "AUD")
SYMBOLS = ("AAPL", "MSFT", "NVDA", "TSLA", "AMZN", "GOOGL", "META", "IBM")
LANGUAGES = ("French", "German", "Spanish", "Italian", "Japanese", "Portuguese")
PHRASES = ("Where is the nearest train station?", "Thank you for your help yesterday.", "The meeting starts at noon.",
           "Could you send me the report?", "I would like a table by the window.")
EVENT_TITLES = ("Quarterly review", "Dentist appointment", "Team lunch", "Yoga class", "Call with the bank")
SUBJECTS = (("Project update", "The first milestone is done and the demo is ready."),
            ("Dinner on Friday", "Are you free for dinner on Friday evening?"),
            ("Invoice question", "Could you resend the invoice for March?"),
            ("Welcome aboard", "We are happy to have you on the team."))
RESTAURANTS = ("The Olive Tree", "Blue Lantern", "Casa Verde", "The Copper Pot", "Sakura House")
WORDS = ("ephemeral", "serendipity", "ubiquitous", "laconic", "quixotic", "mellifluous")
FOODS = ("chicken", "lemon", "garlic", "rice", "spinach", "tomatoes", "chickpeas", "mushrooms", "tofu", "basil")
PLACES = ("the central station", "the city museum", "the airport", "the university library", "the old harbor")
MODES = ("driving", "walking", "cycling", "transit")
SONGS = (("Clair de Lune", "Claude Debussy"), ("Bohemian Rhapsody", "Queen"), ("Blue in Green", "Miles Davis"),
         ("Hallelujah", "Leonard Cohen"))
TODOS = ("renew passport", "water the plants", "pay the electricity bill", "book a haircut")
PRIORITIES = ("low", "medium", "high")

Ask = Callable[[random.Random], tuple[str, Json]]  # -> (user message, the call's arguments)


@dataclass(frozen=True, slots=True)
class Function:
    """One tool of the pool: what it does, its parameters (JSON schema properties) and a request only it answers."""

    description: str
    properties: Json
    ask: Ask


def tool_definition(name: str) -> Json:
    """The OpenAI-format definition of a pool function, a fresh copy each time."""
    fn = FUNCTIONS[name]
    return {"type": "function", "function": {"name": name, "description": fn.description,
                                             "parameters": _obj(copy.deepcopy(fn.properties))}}


def _weather(rng: random.Random) -> tuple[str, Json]:
    city, unit = rng.choice(CITIES)[0], rng.choice(("celsius", "fahrenheit"))
    return f"What's the weather in {city} right now? Give me the temperature in {unit}.", {"city": city, "unit": unit}


def _currency(rng: random.Random) -> tuple[str, Json]:
    amount, (src, dst) = rng.choice((50, 120, 250, 75.5, 1999.99, 300)), rng.sample(CURRENCIES, 2)
    return f"How much is {amount} {src} in {dst}?", {"amount": amount, "from": src, "to": dst}


def _flights(rng: random.Random) -> tuple[str, Json]:
    (origin, _), (dest, _) = rng.sample(CITIES, 2)
    date = _date(rng, 2026)
    return f"Find me flights from {origin} to {dest} on {date}.", {"origin": origin, "destination": dest, "date": date}


def _calendar(rng: random.Random) -> tuple[str, Json]:
    title, date = rng.choice(EVENT_TITLES), _date(rng, 2026)
    time, minutes = f"{rng.randint(8, 18):02d}:{rng.choice((0, 15, 30, 45)):02d}", rng.choice((15, 30, 45, 60, 90))
    return (f'Put "{title}" on my calendar for {date} at {time}, lasting {minutes} minutes.',
            {"title": title, "date": date, "time": time, "duration_minutes": minutes})


def _email(rng: random.Random) -> tuple[str, Json]:
    to, (subject, body) = f"{rng.choice(FIRST).lower()}@example.com", rng.choice(SUBJECTS)
    return (f'Send an email to {to} with the subject "{subject}" and the body "{body}"',
            {"to": to, "subject": subject, "body": body})


def _stock(rng: random.Random) -> tuple[str, Json]:
    symbol = rng.choice(SYMBOLS)
    return f"What is {symbol} trading at right now?", {"symbol": symbol}


def _restaurant(rng: random.Random) -> tuple[str, Json]:
    name, size, time = rng.choice(RESTAURANTS), rng.randint(2, 10), f"{rng.randint(18, 21)}:{rng.choice((0, 30)):02d}"
    return f"Book a table at {name} for {size} people at {time}.", {"name": name, "party_size": size, "time": time}


def _translate(rng: random.Random) -> tuple[str, Json]:
    text, language = rng.choice(PHRASES), rng.choice(LANGUAGES)
    return f'Translate "{text}" into {language}.', {"text": text, "target_language": language}


def _timer(rng: random.Random) -> tuple[str, Json]:
    minutes = rng.randint(2, 90)
    return f"Set a timer for {minutes} minutes.", {"minutes": minutes}


def _word(rng: random.Random) -> tuple[str, Json]:
    word = rng.choice(WORDS)
    return f'What does the word "{word}" mean?', {"word": word}


def _tip(rng: random.Random) -> tuple[str, Json]:
    bill, percent = _price(rng, 18, 240), rng.choice((10, 12.5, 15, 18, 20, 22))
    return f"Our bill came to {bill}. How much is a {percent} percent tip?", {"bill": bill, "percent": percent}


def _recipes(rng: random.Random) -> tuple[str, Json]:
    foods, minutes = rng.sample(FOODS, rng.randint(2, 3)), rng.choice((20, 30, 40, 45, 60))
    return (f"Find me recipes that use {_listed(foods)} and take at most {minutes} minutes.",
            {"ingredients": foods, "max_minutes": minutes})


def _directions(rng: random.Random) -> tuple[str, Json]:
    (origin, dest), mode = rng.sample(PLACES, 2), rng.choice(MODES)
    return (f"Give me {mode} directions from {origin} to {dest}.",
            {"origin": origin, "destination": dest, "mode": mode})


def _package(rng: random.Random) -> tuple[str, Json]:
    number = f"1Z{rng.randint(10 ** 9, 10 ** 10 - 1)}"
    return f"Where is my package? The tracking number is {number}.", {"tracking_number": number}


def _song(rng: random.Random) -> tuple[str, Json]:
    title, artist = rng.choice(SONGS)
    return f'Play "{title}" by {artist}.', {"title": title, "artist": artist}


def _todo(rng: random.Random) -> tuple[str, Json]:
    task, priority = rng.choice(TODOS), rng.choice(PRIORITIES)
    return f'Add "{task}" to my to-do list with {priority} priority.', {"task": task, "priority": priority}


_DATE = _t("string", "Date as YYYY-MM-DD")
_TIME = _t("string", "24-hour time as HH:MM")

FUNCTIONS: dict[str, Function] = {
    "get_weather": Function("Get the current weather in a city.", {
        "city": _t("string", "City name"), "unit": _enum(("celsius", "fahrenheit"), "Temperature unit")}, _weather),
    "convert_currency": Function("Convert an amount of money from one currency to another.", {
        "amount": _t("number", "Amount to convert"), "from": _t("string", "ISO code of the source currency"),
        "to": _t("string", "ISO code of the target currency")}, _currency),
    "search_flights": Function("Search for flights between two cities on a date.", {
        "origin": _t("string", "Departure city"), "destination": _t("string", "Arrival city"), "date": _DATE},
        _flights),
    "create_calendar_event": Function("Add an event to the user's calendar.", {
        "title": _t("string", "Event title"), "date": _DATE, "time": _TIME,
        "duration_minutes": _t("integer", "Length of the event in minutes")}, _calendar),
    "send_email": Function("Send an email.", {
        "to": _t("string", "Recipient's email address"), "subject": _t("string", "Subject line"),
        "body": _t("string", "Message text")}, _email),
    "get_stock_price": Function("Get the latest price of a stock.", {
        "symbol": _t("string", "Ticker symbol, e.g. AAPL")}, _stock),
    "book_restaurant": Function("Reserve a table at a restaurant.", {
        "name": _t("string", "Restaurant name"), "party_size": _t("integer", "Number of people"), "time": _TIME},
        _restaurant),
    "translate_text": Function("Translate text into another language.", {
        "text": _t("string", "Text to translate"), "target_language": _t("string", "Language to translate into")},
        _translate),
    "set_timer": Function("Start a countdown timer.", {"minutes": _t("integer", "Length of the timer in minutes")},
                          _timer),
    "lookup_word": Function("Look up the definition of a word in the dictionary.", {
        "word": _t("string", "The word to define")}, _word),
    "calculate_tip": Function("Calculate the tip for a bill.", {
        "bill": _t("number", "Bill amount"), "percent": _t("number", "Tip percentage")}, _tip),
    "find_recipes": Function("Find recipes that use the given ingredients.", {
        "ingredients": _array(_t("string"), 1, "Ingredients to use"),
        "max_minutes": _t("integer", "Longest total cooking time in minutes")}, _recipes),
    "get_directions": Function("Get directions between two places in town.", {
        "origin": _t("string", "Starting place"), "destination": _t("string", "Place to go to"),
        "mode": _enum(MODES, "How to travel")}, _directions),
    "track_package": Function("Track a parcel's delivery status.", {
        "tracking_number": _t("string", "The parcel's tracking number")}, _package),
    "play_song": Function("Play a song on the user's speakers.", {
        "title": _t("string", "Song title"), "artist": _t("string", "Performing artist")}, _song),
    "add_todo": Function("Add a task to the user's to-do list.", {
        "task": _t("string", "What to do"), "priority": _enum(PRIORITIES, "Task priority")}, _todo),
}


def _user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}
