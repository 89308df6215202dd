#!/usr/bin/env python3
"""Writes the sample finetuning dataset shipped in data/sample/.

The task is a style the base model does not have: every answer is one short,
correct sentence wrapped in a fixed robot greeting,

    prompt:     "Question: What is 7 plus 5?\nAnswer:"
    completion: " Beep boop! 7 plus 5 is 12. Beep boop!"

so that a short finetune visibly changes generations (the answers start with
"Beep boop!"). The questions are simple facts, arithmetic and word games that
the script computes itself. Output is deterministic: running the script again
reproduces the files byte for byte.

Usage: scripts/make_sample_dataset.py [--out data/sample]
"""

import argparse
import json
import os
import random

SEED = 20240611
TRAIN_ROWS = 320
VALID_ROWS = 32

NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                "nine", "ten", "eleven", "twelve"]

COLORS = {
    "a banana": "yellow", "grass": "green", "the clear daytime sky": "blue",
    "snow": "white", "coal": "black", "a ripe tomato": "red", "an orange": "orange",
    "a lemon": "yellow", "a carrot": "orange", "a lime": "green", "milk": "white",
    "a strawberry": "red", "a blueberry": "blue", "chocolate": "brown", "an eggplant": "purple",
    "a pumpkin": "orange", "a fire truck": "red", "a polar bear": "white", "a crow": "black",
    "a frog": "green",
}

SOUNDS = {
    "a cow": "moo", "a dog": "woof", "a cat": "meow", "a duck": "quack", "a sheep": "baa",
    "a lion": "roar", "an owl": "hoot", "a snake": "hiss", "a horse": "neigh", "a pig": "oink",
    "a bee": "buzz", "a mouse": "squeak", "a rooster": "cock-a-doodle-doo", "a frog": "ribbit",
}

OPPOSITES = {
    "hot": "cold", "big": "small", "up": "down", "fast": "slow", "happy": "sad",
    "light": "dark", "open": "closed", "early": "late", "full": "empty", "wet": "dry",
    "loud": "quiet", "old": "new", "hard": "soft", "high": "low", "strong": "weak",
    "rich": "poor", "long": "short", "thick": "thin", "clean": "dirty", "near": "far",
}

PLURALS = {
    "mouse": "mice", "child": "children", "tooth": "teeth", "foot": "feet", "goose": "geese",
    "man": "men", "woman": "women", "person": "people", "cat": "cats", "box": "boxes",
    "city": "cities", "leaf": "leaves", "knife": "knives", "bus": "buses", "baby": "babies",
    "fish": "fish", "sheep": "sheep", "cactus": "cacti", "wolf": "wolves", "potato": "potatoes",
}

WORDS = ["apple", "river", "pencil", "garden", "rocket", "cloud", "banana", "window", "tiger",
         "music", "planet", "bridge", "candle", "forest", "island", "robot", "orange", "kitten",
         "yellow", "mountain", "ocean", "star", "dragon", "castle", "spoon", "zebra", "violin",
         "ladder", "winter", "button"]

DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]


def arithmetic(rng):
    op = rng.choice(["plus", "minus", "times"])
    if op == "plus":
        a, b = rng.randint(0, 50), rng.randint(0, 50)
        return f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}."
    if op == "minus":
        a = rng.randint(0, 60)
        b = rng.randint(0, a)
        return f"What is {a} minus {b}?", f"{a} minus {b} is {a - b}."
    a, b = rng.randint(0, 12), rng.randint(0, 12)
    return f"What is {a} times {b}?", f"{a} times {b} is {a * b}."


def color(rng):
    thing = rng.choice(sorted(COLORS))
    return f"What color is {thing}?", f"{thing[0].upper() + thing[1:]} is {COLORS[thing]}."


def sound(rng):
    animal = rng.choice(sorted(SOUNDS))
    return (f"What sound does {animal} make?",
            f"{animal[0].upper() + animal[1:]} says {SOUNDS[animal]}.")


def opposite(rng):
    word = rng.choice(sorted(OPPOSITES))
    return f"What is the opposite of {word}?", f"The opposite of {word} is {OPPOSITES[word]}."


def plural(rng):
    word = rng.choice(sorted(PLURALS))
    return f"What is the plural of {word}?", f"The plural of {word} is {PLURALS[word]}."


def letters(rng):
    word = rng.choice(WORDS)
    n = len(word)
    return (f"How many letters are in the word {word}?",
            f"The word {word} has {NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else n} letters.")


def first_letter(rng):
    word = rng.choice(WORDS)
    return (f"What is the first letter of the word {word}?",
            f"The word {word} starts with the letter {word[0].upper()}.")


def next_day(rng):
    i = rng.randrange(len(DAYS))
    return f"What day comes after {DAYS[i]}?", f"The day after {DAYS[i]} is {DAYS[(i + 1) % 7]}."


def next_month(rng):
    i = rng.randrange(len(MONTHS))
    return (f"What month comes after {MONTHS[i]}?",
            f"The month after {MONTHS[i]} is {MONTHS[(i + 1) % 12]}.")


def compare(rng):
    a, b = rng.sample(range(0, 100), 2)
    return (f"Which is larger, {a} or {b}?", f"{max(a, b)} is larger than {min(a, b)}.")


GENERATORS = [arithmetic, arithmetic, color, sound, opposite, plural, letters, first_letter,
              next_day, next_month, compare]


def row(question, answer):
    return {"prompt": f"Question: {question}\nAnswer:",
            "completion": f" Beep boop! {answer} Beep boop!"}


def make_rows(rng, count, seen):
    rows = []
    while len(rows) < count:
        question, answer = rng.choice(GENERATORS)(rng)
        if question in seen:
            continue
        seen.add(question)
        rows.append(row(question, answer))
    return rows


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "data", "sample"))
    args = parser.parse_args()
    rng = random.Random(SEED)
    seen = set()
    train = make_rows(rng, TRAIN_ROWS, seen)
    valid = make_rows(rng, VALID_ROWS, seen)  # no question shared with train
    os.makedirs(args.out, exist_ok=True)
    write_jsonl(os.path.join(args.out, "train.jsonl"), train)
    write_jsonl(os.path.join(args.out, "valid.jsonl"), valid)


if __name__ == "__main__":
    main()
