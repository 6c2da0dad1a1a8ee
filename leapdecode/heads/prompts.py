"""Instructions for self-distillation: the target answers them, and a draft head learns from its answers.

Topics crossed with task templates, plus a few arithmetic and code tasks with random numbers. None of them
comes from a benchmark set, so a head trained on the answers is measured on prompts it never saw.
"""

from __future__ import annotations

import random

TOPICS = (
    "climate change", "the French Revolution", "machine learning", "photosynthesis", "a small bakery",
    "remote work", "the Roman Empire", "black holes", "healthy sleep", "electric cars", "a job interview",
    "learning a new language", "the stock market", "volcanoes", "social media", "a trip to Japan",
    "renewable energy", "ancient Egypt", "the human immune system", "chess strategy", "a birthday party",
    "time management", "quantum computing", "the water cycle", "a mystery novel", "vegetarian cooking",
    "public transport in cities", "the Renaissance", "DNA", "a startup company", "marathon training",
    "the moon landing", "inflation", "honey bees", "a haunted house", "online privacy", "jazz music",
    "the printing press", "plate tectonics", "a customer complaint", "budget travel", "Shakespeare",
    "prime numbers", "sorting algorithms", "a museum visit", "gardening", "the Industrial Revolution",
    "vaccines", "a soccer match", "meditation", "coral reefs", "the internet", "a wedding speech",
    "supply and demand", "the solar system", "dog training", "a science fair", "democracy", "coffee",
    "probability", "linked lists", "a rainy day", "artificial intelligence ethics", "the Great Wall of China",
    "recycling", "a first day at school", "the Olympic Games", "bread baking", "cybersecurity", "rainforests",
    "a lost wallet", "personal finance", "the theory of evolution", "smartphones", "a road trip", "friendship",
    "the Cold War", "nuclear energy", "a dragon", "team leadership", "the human brain", "tea ceremonies",
    "mountain climbing", "a robot that learns to paint", "ocean tides", "the Silk Road", "video games",
    "a small town library", "gravity", "fast fashion", "the piano", "a spaceship crew", "urban farming",
    "the Byzantine Empire", "antibiotics", "a job promotion", "hash tables", "recursion", "SQL databases",
    "the metric system", "a thunderstorm", "public speaking", "minimalism", "the Amazon river", "impressionist painting",
)
TEMPLATES = (
    "Explain {t} to a high school student.", "Write a short story about {t}.",
    "Give me five practical tips related to {t}.", "What are the pros and cons of {t}?",
    "Write a persuasive essay introduction about {t}.", "Pretend you are a tour guide and talk about {t}.",
    "Summarize the history of {t} in a few paragraphs.", "Write a formal email to a colleague about {t}.",
    "Write a poem about {t}.", "Compose a blog post title and outline about {t}.",
    "What are common misconceptions about {t}?", "Describe {t} as if you were a pirate.",
    "Write a Python function related to {t} and explain it.", "Create a quiz with three questions about {t}.",
    "Compare {t} with something similar and explain the differences.",
    "Answer step by step: how would you teach a child about {t}?",
    "Write a dialogue between two friends discussing {t}.", "List the key facts about {t} in bullet points.",
    "Imagine you are a famous scientist. Give a short speech about {t}.",
    "Write a product review that mentions {t}.",
)
NUMERIC = (
    "What is {a} times {b}? Show your work.", "If a train travels {c} km in {b} hours, what is its average speed?",
    "Solve for x: {a}x + {b} = {c}.", "A shop sells pens at {a} cents each. How much do {b} pens cost?",
    "Write a Python function that returns the sum of the first {a} square numbers.",
    "How many minutes are there in {b} days? Explain.", "What is {c} divided by {b}, rounded to two decimals?",
)


def instructions(n: int, seed: int = 0) -> list[str]:
    """n distinct instructions, the same ones for the same seed."""
    limit = len(TOPICS) * len(TEMPLATES)
    if n > limit:
        raise ValueError(f"at most {limit} distinct instructions, asked for {n}")
    rng, out = random.Random(seed), dict[str, None]()
    while len(out) < n:
        if rng.random() < 0.15:
            out[rng.choice(NUMERIC).format(a=rng.randint(2, 99), b=rng.randint(2, 30), c=rng.randint(10, 500))] = None
        else:
            out[rng.choice(TEMPLATES).format(t=rng.choice(TOPICS))] = None
    return list(out)
