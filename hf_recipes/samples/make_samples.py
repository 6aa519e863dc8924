"""Generate the small, original sample data sets shipped with hf-recipes.

Run ``python3 make_samples.py`` from anywhere; the files are (re)written next to
this script.  Only the standard library is used and every random choice comes
from ``random.Random(0)``, so the output is byte-for-byte reproducible.

All text is composed here from hand-written templates and word banks; nothing is
copied from another corpus, so the outputs carry no third-party license.

Outputs
-------
sentiment/train.csv, sentiment/test.csv   short tweet-like texts, columns text,sentiment
lyrics/songs.txt                          short rhyming songs, one blank line between songs
instructions/instructions.json            Alpaca-style instruction/input/output records
README.md                                 what each file is, with counts
"""

from __future__ import annotations

import csv
import json
import random
import re
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
rng = random.Random(0)


# ---------------------------------------------------------------------------
# 1. Sentiment
# ---------------------------------------------------------------------------

SENT_TRAIN_COUNTS = {"neutral": 456, "positive": 384, "negative": 360}  # 1,200 rows
SENT_TEST_COUNTS = {"neutral": 114, "positive": 96, "negative": 90}  # 300 rows

THINGS = [
    "the new coffee shop", "this rain", "my morning commute", "the season finale", "the phone update",
    "the monday meeting", "the night bus", "my team", "the concert", "this weather",
    "the pizza place on main street", "my new speaker", "the early train", "the office wifi",
    "the big game", "this playlist", "their new album", "the movie", "the hotel", "my landlord",
    "the traffic downtown", "the gym", "customer service", "the library", "the beach", "my neighbor",
    "the airline", "the corner bakery", "this book", "the parade", "the food truck", "the new episode",
    "my laptop", "the printer at work", "school", "the park near my house", "the museum",
    "the farmers market", "my haircut", "the bike lane", "the new menu", "the school play",
    "the hiking trail", "this podcast", "the delivery app", "the train station", "my sister's cooking",
    "the road trip", "the street festival", "the group project", "the camping trip", "the hospital staff",
    "the ferry", "the city pool", "my old car", "the gaming update", "the math exam", "the weekend market",
    "the school bus", "the new bridge", "our wedding venue", "the dentist", "the noodle bar",
]

POS_ADJ = [
    "amazing", "awesome", "wonderful", "fantastic", "great", "brilliant", "lovely", "perfect",
    "incredible", "excellent", "delightful", "so good", "beautiful", "fun", "superb", "outstanding",
    "really nice", "a total win", "a dream",
]
NEG_ADJ = [
    "awful", "terrible", "horrible", "the worst", "disappointing", "useless", "a disaster",
    "so annoying", "broken again", "a mess", "painful", "miserable", "a nightmare", "pathetic",
    "really bad", "so slow", "a joke", "dreadful", "a total fail",
]
POS_VERB = ["love", "adore", "really enjoy", "can't get enough of", "really like", "am so grateful for",
            "am obsessed with", "totally recommend"]
NEG_VERB = ["hate", "can't stand", "am so tired of", "am sick of", "am fed up with", "really dislike",
            "regret trying", "am done with"]
POS_VERB2 = ["love", "adore", "really enjoy", "can't get enough of", "really like", "totally recommend"]
NEG_VERB2 = ["hate", "can't stand", "really dislike", "are so tired of", "are done with", "are sick of"]
POS_FEEL = ["so happy", "so excited", "thrilled", "really proud", "so grateful", "over the moon", "delighted"]
NEG_FEEL = ["so frustrated", "so angry", "really upset", "so disappointed", "fed up", "annoyed", "miserable"]
POS_TAIL = ["made my day", "was the best part of my week", "cheered me up", "put a smile on my face",
            "never disappoints", "exceeded every expectation", "was worth every penny"]
NEG_TAIL = ["ruined my day", "was a waste of time", "let me down again", "gave me a headache",
            "never works", "was a waste of money", "made everything worse"]
POS_OPEN = ["wow", "yay", "finally", "best day ever", "honestly", "so", "omg"]
NEG_OPEN = ["ugh", "seriously", "great, just great", "not again", "honestly", "wow", "why"]
INTENS = ["really", "absolutely", "totally", "truly", "just", "seriously"]
PEOPLE = ["my mom", "my best friend", "the kids", "my roommate", "grandpa", "my boss", "the neighbors",
          "my brother", "my coworkers", "my dad", "our coach", "my cousin"]
PLACES = ["the office", "the gym", "the airport", "the library", "the station", "the mall", "campus",
          "the dentist", "the grocery store", "the park", "my aunt's place", "the post office",
          "the city center", "the hardware store", "the cafe on fifth street", "the clinic", "the bank"]
TIMES = ["7am", "8:30", "9 am", "noon", "1pm", "3:15", "4 pm", "5:45", "6pm", "7:30", "10pm",
         "half past two", "midnight"]
DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "the weekend"]
DAYPARTS = ["morning", "afternoon", "evening"]
ITEMS = ["the groceries", "a new charger", "some paint", "the tickets", "my glasses", "a package",
         "the keys", "printer paper", "a birthday card", "batteries", "the dry cleaning", "a spare tire"]
EVENTS = ["the meeting", "the game", "practice", "the school meeting", "the book club", "the webinar",
          "band rehearsal", "the town hall", "yoga class", "the match", "the quiz night", "the workshop"]
TRANSPORT = ["bus", "train", "ferry", "subway", "tram", "shuttle"]
DEVICES = ["laptop", "phone", "tablet", "router", "watch"]
WEATHER = ["rain", "clouds", "light snow", "wind", "sunshine", "fog", "showers"]
HASH_SHARED = ["#monday", "#weekend", "#coffee", "#travel", "#work", "#music", "#food", "#commute",
               "#citylife", "#tuesday", "#friday"]
HASH_POS = ["#blessed", "#happy", "#goodtimes", "#grateful", "#winning", "#love"]
HASH_NEG = ["#fail", "#annoyed", "#worst", "#ugh", "#disappointed", "#nope"]
MENTIONS = ["@user", "@user", "@user", "@user", "@user_help", "@citytransit"]

POS_TEMPLATES = [
    "i {posverb} {thing}",
    "{thing} was {posadj}",
    "{thing} is {intens} {posadj}",
    "just tried {thing} and it was {posadj}",
    "{posopen} {thing} {postail}",
    "{thing} {postail}",
    "{posfeel} about {thing}",
    "{posfeel} with {thing} today",
    "{people} and i {posverb2} {thing}",
    "{thing} this {daypart} was {posadj}, {posfeel}",
    "can't stop smiling, {thing} was {posadj}",
    "spent the {daypart} at {place} and it was {posadj}",
    "shout out to {people}, {thing} was {posadj}",
    "{thing} on {day} was {intens} {posadj}",
    "{posopen}, {thing} {postail}",
    "honestly {thing} is {posadj} and i {posverb} it",
    "{people} surprised me with {thing}, {posfeel}",
    "{posfeel} that {thing} is back",
]
NEG_TEMPLATES = [
    "i {negverb} {thing}",
    "{thing} was {negadj}",
    "{thing} is {intens} {negadj}",
    "just tried {thing} and it was {negadj}",
    "{negopen} {thing} {negtail}",
    "{thing} {negtail}",
    "{negfeel} about {thing}",
    "{negfeel} with {thing} today",
    "{people} and i {negverb2} {thing}",
    "{thing} this {daypart} was {negadj}, {negfeel}",
    "waited an hour and {thing} was {negadj}",
    "spent the {daypart} at {place} and it was {negadj}",
    "{negopen}, {thing} {negtail}",
    "{thing} on {day} was {intens} {negadj}",
    "honestly {thing} is {negadj} and i {negverb} it",
    "not happy at all, {thing} {negtail}",
    "{negfeel} that {thing} is back",
    "never again, {thing} was {negadj}",
]
NEU_TEMPLATES = [
    "heading to {place} at {time}",
    "{event} starts at {time} on {day}",
    "picking up {item} from {place} later",
    "{place} closes at {time} today",
    "meeting {people} at {place} on {day}",
    "just got to {place}, {event} starts at {time}",
    "anyone know what time {event} starts on {day}",
    "working from {place} this {daypart}",
    "{people} will drive us to {place} on {day}",
    "reminder: {event} moved to {day} at {time}",
    "taking the {transport} to {place} this {daypart}",
    "the forecast says {weather} on {day}",
    "we have {event} at {time} on {day}",
    "going to {place} after work to get {item}",
    "should be back home by {time}",
    "updating my {device} tonight, back online by {time}",
    "need to buy {item} before {day}",
    "the {transport} to {place} leaves at {time}",
    "{event} is in room 204 this {daypart}",
    "dropping {item} off at {place} on {day}",
    "{people} asked about {thing} on {day}",
    "trying {thing} for the first time on {day}",
    "what time does {place} open on {day}",
    "checking out {thing} this {daypart} with {people}",
    "the {transport} stop is next to {place}",
    "does anyone know if {place} is open on {day}",
]

SENT_CONFIG = {
    "positive": (POS_TEMPLATES, HASH_POS),
    "negative": (NEG_TEMPLATES, HASH_NEG),
    "neutral": (NEU_TEMPLATES, []),
}


def fill(template: str) -> str:
    slots = {
        "thing": THINGS, "posadj": POS_ADJ, "negadj": NEG_ADJ, "posverb": POS_VERB, "negverb": NEG_VERB,
        "posverb2": POS_VERB2, "negverb2": NEG_VERB2,
        "posfeel": POS_FEEL, "negfeel": NEG_FEEL, "postail": POS_TAIL, "negtail": NEG_TAIL,
        "posopen": POS_OPEN, "negopen": NEG_OPEN, "intens": INTENS, "people": PEOPLE, "place": PLACES,
        "time": TIMES, "day": DAYS, "daypart": DAYPARTS, "item": ITEMS, "event": EVENTS,
        "transport": TRANSPORT, "device": DEVICES, "weather": WEATHER,
    }
    return re.sub(r"\{(\w+)\}", lambda m: rng.choice(slots[m.group(1)]), template)


def tweetify(core: str, label: str) -> str:
    templates, class_tags = SENT_CONFIG[label]
    text = core
    # ending punctuation
    if label == "neutral":
        if core.startswith(("anyone", "does", "what time")):
            ending = rng.choice(["?", "?", ""])
        else:
            ending = rng.choice(["", "", ".", ".", "..."])
    else:
        ending = rng.choice(["", "", ".", "!", "!!", "...", "!"])
    text += ending
    # casing: mostly lowercase, some sentence case
    if rng.random() < 0.35:
        text = text[0].upper() + text[1:]
        text = re.sub(r"\bi\b", "I", text)
    # mentions and hashtags
    if rng.random() < 0.15:
        text = rng.choice(MENTIONS) + " " + text
    if rng.random() < 0.25:
        pool = HASH_SHARED + class_tags if class_tags else HASH_SHARED
        text = text + " " + rng.choice(pool)
    return text


def norm_key(text: str) -> str:
    """Texts that differ only in case, punctuation, mention or hashtag count as duplicates."""
    text = re.sub(r"[@#]\w+", "", text.lower())
    return re.sub(r"[^a-z0-9]+", " ", text).strip()


def make_sentiment() -> dict:
    seen: set[str] = set()
    pools: dict[str, list[str]] = {}
    for label in ("neutral", "positive", "negative"):
        need = SENT_TRAIN_COUNTS[label] + SENT_TEST_COUNTS[label]
        templates, _ = SENT_CONFIG[label]
        texts: list[str] = []
        while len(texts) < need:
            text = tweetify(fill(rng.choice(templates)), label)
            n_words = len(text.split())
            key = norm_key(text)
            if not 5 <= n_words <= 20 or key in seen:
                continue
            seen.add(key)
            texts.append(text)
        pools[label] = texts
    train, test = [], []
    for label, texts in pools.items():
        n_test = SENT_TEST_COUNTS[label]
        test += [(t, label) for t in texts[:n_test]]
        train += [(t, label) for t in texts[n_test:]]
    rng.shuffle(train)
    rng.shuffle(test)
    out = HERE / "sentiment"
    out.mkdir(exist_ok=True)
    for name, rows in (("train.csv", train), ("test.csv", test)):
        with open(out / name, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["text", "sentiment"])
            writer.writerows(rows)
    return {"train": Counter(l for _, l in train), "test": Counter(l for _, l in test)}


# ---------------------------------------------------------------------------
# 2. Lyrics
# ---------------------------------------------------------------------------

N_SONGS = 120

RHYMES = [
    ["hill", "mill", "sill", "quill", "rill"],
    ["tree", "sea", "bee", "key", "quay"],
    ["moon", "spoon", "tune", "dune", "lagoon", "balloon"],
    ["rain", "lane", "train", "plain", "grain", "chain", "pane"],
    ["door", "shore", "floor", "store", "oar", "moor"],
    ["bay", "hay", "clay", "tray", "way", "day"],
    ["bell", "well", "shell", "dell"],
    ["stone", "bone", "throne", "cone"],
    ["road", "toad", "load"],
    ["star", "jar", "car", "bar"],
    ["boat", "coat", "goat", "moat", "note"],
    ["cat", "hat", "mat", "bat"],
    ["wire", "spire", "fire", "choir"],
    ["sand", "land", "hand", "band", "strand"],
    ["gate", "plate", "slate"],
    ["fox", "box", "rocks", "clocks", "socks"],
    ["bread", "shed", "bed", "thread", "sled"],
    ["town", "crown", "gown"],
    ["game", "flame", "frame", "name"],
    ["snow", "crow", "glow", "show"],
    ["pine", "vine", "line", "sign"],
    ["cake", "lake", "drake", "rake", "snake"],
    ["night", "light", "kite", "height"],
    ["bough", "plough", "cow", "brow"],
    ["wheel", "meal", "seal", "eel"],
    ["sky", "pie", "fly", "rye"],
    ["king", "ring", "swing", "spring", "string", "wing"],
    ["heart", "cart", "start"],
    ["stream", "dream", "beam", "cream"],
    ["bridge", "ridge", "fridge"],
    ["nest", "west", "chest", "crest"],
    ["deer", "pier", "year", "spear"],
]

# Lines that end with the rhyme word.  {w} is the rhyme word.
END_LINES = [
    "I wandered down beside the {w}",
    "The {adj} wind went whistling past the {w}",
    "Old {name} sat singing by the {w}",
    "We danced all morning near the {w}",
    "My true love waits beside the {w}",
    "The little {animal} found the {w}",
    "Sing hey and sing ho for the {w}",
    "There's {color} light upon the {w}",
    "Now who will come and mend the {w}",
    "So fare thee well, my {adj} {w}",
    "{name} went walking to the {w}",
    "The children laughed around the {w}",
    "In {season} time we passed the {w}",
    "She left her ribbon by the {w}",
    "The rain came tapping on the {w}",
    "A {adj} bird flew over the {w}",
    "We'll meet again beneath the {w}",
    "The miller's daughter loved the {w}",
    "Go tell the sailor of the {w}",
    "The {color} horse ran to the {w}",
    "Come rest your head upon the {w}",
    "Oh hush now, baby, see the {w}",
    "The old folk spoke about the {w}",
    "Down, down, down to the {w}",
    "We built a fire near the {w}",
    "The candle burned beside the {w}",
    "The fiddler played beneath the {w}",
    "He carved his name upon the {w}",
    "And all the village knew the {w}",
    "The {animal} slept inside the {w}",
    "I'll count the days until the {w}",
    "My {kin} once told me of the {w}",
    "With a {adj} heart I left the {w}",
    "The morning sun came to the {w}",
    "We sang our {adj} song to the {w}",
    "And {name} came dancing from the {w}",
    "There's nothing finer than the {w}",
    "The {animal} and I went to the {w}",
    "So long ago, down by the {w}",
    "Then off we rode toward the {w}",
]

# Lines that do not need to rhyme (used in the ballad ABCB pattern).
FREE_LINES = [
    "When I was young and the days were long",
    "Oh, the summer came and the summer went",
    "My {kin} said, child, be kind and true",
    "The {season} winds were blowing free",
    "And {name} was the fairest one of all",
    "We had no silver and we had no gold",
    "Come listen now and I will tell",
    "The lanterns swung in the evening air",
    "There was a lass with a {color} shawl",
    "The bells rang out from the chapel wall",
    "I took my hat and I took my cane",
    "And the {animal} cried in the empty barn",
    "Oh, many a mile have I walked alone",
    "The river ran both deep and wide",
    "She wore a ring of {color} thread",
    "The years went by like leaves in the wind",
    "He whistled low and he whistled sweet",
    "The harvest moon was shining round",
    "So fill your cup and raise it high",
    "In the {adj} town where I was born",
    "They say the road goes on and on",
    "Oh, the {adj} sailor came to shore",
    "And the stars looked down on the quiet fields",
    "Upon a hill there stood a house",
]

REFRAINS = [
    ("With a hey and a ho and a fiddle-dee-dee,", "Come sing the old song along with me."),
    ("So row, row, row to the end of the day,", "And sing till the dark carries sorrow away."),
    ("La la lee, and a la la lo,", "The river will run where the willows grow."),
    ("Oh, the wind and the rain and the long grey sea,", "Will carry my true love home to me."),
    ("Hush-a-bye, hush-a-bye, close your eyes,", "The stars are awake in the velvet skies."),
    ("Round and round the wheel goes by,", "Under the wide and the open sky."),
    ("Sing low, sing high, sing soft and slow,", "And follow the road wherever you go."),
    ("Tap your feet and clap your hands,", "We'll dance across a hundred lands."),
    ("Oh, tumble-down, tumble-down, over the hill,", "The water runs fast by the old grey mill."),
    ("Sing ho for the morning and ho for the night,", "And ho for the fire that keeps us bright."),
]

LYRIC_FILL = {
    "adj": ["gentle", "silver", "golden", "lonely", "merry", "weary", "quiet", "bonny", "little",
            "rolling", "stormy", "shining", "wild", "sleepy", "cold", "green", "humble", "dusty"],
    "name": ["Molly", "Jack", "Annie", "Tom", "Rosie", "Peter", "Nell", "Willy", "Kate", "Sam",
             "Betsy", "Johnny", "Maggie", "Ned", "Lily", "Robin"],
    "animal": ["mouse", "lamb", "hen", "wren", "pup", "kitten", "hare", "piglet", "duckling", "pony"],
    "color": ["silver", "golden", "rosy", "amber", "pale", "blue", "crimson", "grey"],
    "season": ["summer", "winter", "harvest", "autumn", "planting", "spring"],
    "kin": ["mother", "father", "granny", "grandpa", "sister", "brother", "uncle"],
}


def lyric_fill(template: str, word: str = "") -> str:
    def sub(m: re.Match) -> str:
        key = m.group(1)
        return word if key == "w" else rng.choice(LYRIC_FILL[key])
    line = re.sub(r"\{(\w+)\}", sub, template)
    return line[0].upper() + line[1:]


def make_song() -> list[str]:
    style = rng.choice(["couplets", "couplets", "ballad"])
    n_lines = rng.choice([6, 8, 10, 10, 12, 12]) if style == "couplets" else rng.choice([4, 8, 12, 12])
    families = rng.sample(RHYMES, 8)
    templates = rng.sample(END_LINES, len(END_LINES))
    refrain = rng.choice(REFRAINS) if rng.random() < 0.35 and n_lines >= 6 else None
    body_lines = n_lines - (2 if refrain else 0)
    if refrain and style == "ballad":
        body_lines = n_lines - 4 if n_lines >= 8 else n_lines  # keep quatrains whole
        if body_lines == n_lines:
            refrain = None
    lines: list[str] = []
    fam_i = 0
    if style == "couplets":
        for _ in range(body_lines // 2):
            w1, w2 = rng.sample(families[fam_i], 2)
            fam_i += 1
            lines.append(lyric_fill(templates.pop(), w1) + ",")
            lines.append(lyric_fill(templates.pop(), w2) + rng.choice([".", ".", "!", ";"]))
    else:
        free = rng.sample(FREE_LINES, len(FREE_LINES))
        for _ in range(body_lines // 4):
            w1, w2 = rng.sample(families[fam_i], 2)
            fam_i += 1
            lines.append(lyric_fill(free.pop()) + ",")
            lines.append(lyric_fill(templates.pop(), w1) + ";")
            lines.append(lyric_fill(free.pop()) + ",")
            lines.append(lyric_fill(templates.pop(), w2) + ".")
    if refrain:
        r = list(refrain) if style == "couplets" else list(refrain) + list(refrain)
        if style == "couplets" and rng.random() < 0.5 and len(lines) + 4 <= 12:
            lines = r + lines + r
        else:
            lines = lines + r
    return lines


def make_lyrics() -> dict:
    songs, seen = [], set()
    while len(songs) < N_SONGS:
        song = make_song()
        if not 4 <= len(song) <= 12:
            continue
        text = "\n".join(line.rstrip() for line in song)
        if text in seen:
            continue
        seen.add(text)
        songs.append(text)
    out = HERE / "lyrics"
    out.mkdir(exist_ok=True)
    (out / "songs.txt").write_text("\n\n".join(songs) + "\n", encoding="utf-8")
    return {"songs": len(songs), "lines": sum(s.count("\n") + 1 for s in songs)}


# ---------------------------------------------------------------------------
# 3. Instructions
# ---------------------------------------------------------------------------

ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
        "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def number_words(n: int) -> str:
    assert 0 <= n < 1000
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + ("" if n % 10 == 0 else "-" + ONES[n % 10])
    rest = n % 100
    return ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + number_words(rest))


PLURALS = [
    ("cat", "cats"), ("dog", "dogs"), ("book", "books"), ("apple", "apples"), ("house", "houses"),
    ("tree", "trees"), ("car", "cars"), ("bird", "birds"), ("chair", "chairs"), ("table", "tables"),
    ("flower", "flowers"), ("river", "rivers"), ("window", "windows"), ("pencil", "pencils"),
    ("girl", "girls"), ("boy", "boys"), ("bottle", "bottles"), ("garden", "gardens"), ("box", "boxes"),
    ("bus", "buses"), ("dish", "dishes"), ("watch", "watches"), ("fox", "foxes"), ("brush", "brushes"),
    ("glass", "glasses"), ("class", "classes"), ("city", "cities"), ("baby", "babies"),
    ("story", "stories"), ("party", "parties"), ("berry", "berries"), ("puppy", "puppies"),
    ("key", "keys"), ("toy", "toys"), ("day", "days"), ("leaf", "leaves"), ("knife", "knives"),
    ("wolf", "wolves"), ("shelf", "shelves"), ("loaf", "loaves"), ("child", "children"), ("man", "men"),
    ("woman", "women"), ("mouse", "mice"), ("foot", "feet"), ("tooth", "teeth"), ("goose", "geese"),
    ("sheep", "sheep"), ("deer", "deer"), ("potato", "potatoes"), ("tomato", "tomatoes"),
    ("hero", "heroes"), ("ox", "oxen"),
]

CAPITALS = [
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"),
    ("Portugal", "Lisbon"), ("Japan", "Tokyo"), ("China", "Beijing"), ("India", "New Delhi"),
    ("Egypt", "Cairo"), ("Kenya", "Nairobi"), ("Canada", "Ottawa"), ("Mexico", "Mexico City"),
    ("Argentina", "Buenos Aires"), ("Peru", "Lima"), ("Chile", "Santiago"), ("Australia", "Canberra"),
    ("Norway", "Oslo"), ("Sweden", "Stockholm"), ("Finland", "Helsinki"), ("Denmark", "Copenhagen"),
    ("Poland", "Warsaw"), ("Greece", "Athens"), ("Ireland", "Dublin"), ("Austria", "Vienna"),
    ("Hungary", "Budapest"), ("Russia", "Moscow"), ("Turkey", "Ankara"), ("Thailand", "Bangkok"),
    ("Vietnam", "Hanoi"), ("South Korea", "Seoul"), ("Belgium", "Brussels"), ("the Czech Republic", "Prague"),
    ("Cuba", "Havana"), ("Nigeria", "Abuja"), ("Morocco", "Rabat"), ("Ukraine", "Kyiv"),
]

# (word, opposite, usable in both directions)
OPPOSITES = [
    ("hot", "cold", True), ("big", "small", True), ("fast", "slow", True), ("happy", "sad", True),
    ("early", "late", True), ("full", "empty", True), ("hard", "soft", True), ("high", "low", True),
    ("rich", "poor", True), ("wet", "dry", True), ("loud", "quiet", True), ("long", "short", False),
    ("strong", "weak", True), ("clean", "dirty", True), ("heavy", "light", False), ("thick", "thin", False),
    ("wide", "narrow", True), ("young", "old", False), ("first", "last", True), ("day", "night", True),
    ("up", "down", True), ("left", "right", False), ("inside", "outside", True), ("push", "pull", True),
    ("open", "closed", True), ("win", "lose", True), ("buy", "sell", True), ("laugh", "cry", False),
    ("true", "false", True), ("above", "below", True), ("north", "south", True), ("east", "west", True),
    ("before", "after", True), ("question", "answer", True), ("always", "never", True),
    ("dark", "light", False), ("tall", "short", False), ("new", "old", False), ("safe", "dangerous", True),
    ("cheap", "expensive", True), ("sweet", "sour", False), ("friend", "enemy", True),
]

# base, third person singular, past, objects
VERBS = [
    ("walk", "walks", "walked", ["to school", "to the park", "home"]),
    ("play", "plays", "played", ["the piano", "football", "chess"]),
    ("cook", "cooks", "cooked", ["dinner", "breakfast", "the soup"]),
    ("clean", "cleans", "cleaned", ["the kitchen", "the windows", "the garage"]),
    ("paint", "paints", "painted", ["the fence", "a picture", "the door"]),
    ("watch", "watches", "watched", ["a movie", "the birds", "the news"]),
    ("climb", "climbs", "climbed", ["the hill", "the stairs", "a tree"]),
    ("open", "opens", "opened", ["the window", "the box", "the shop"]),
    ("visit", "visits", "visited", ["the museum", "the zoo", "the library"]),
    ("help", "helps", "helped", ["the teacher", "a friend", "the neighbors"]),
    ("wash", "washes", "washed", ["the dishes", "the car", "the dog"]),
    ("carry", "carries", "carried", ["the bags", "the boxes", "the basket"]),
    ("study", "studies", "studied", ["math", "history", "for the test"]),
    ("fix", "fixes", "fixed", ["the bike", "the chair", "the clock"]),
    ("bake", "bakes", "baked", ["bread", "a cake", "cookies"]),
    ("stop", "stops", "stopped", ["the car", "the music", "at the corner"]),
    ("plant", "plants", "planted", ["tomatoes", "a tree", "flowers"]),
    ("finish", "finishes", "finished", ["the homework", "the book", "the puzzle"]),
    ("call", "calls", "called", ["the doctor", "a taxi", "a friend"]),
    ("listen", "listens", "listened", ["to music", "to the radio", "to the rain"]),
    ("jump", "jumps", "jumped", ["over the puddle", "into the pool", "over the fence"]),
    ("dance", "dances", "danced", ["at the party", "in the kitchen", "all night"]),
    ("try", "tries", "tried", ["the soup", "a new game", "the blue shirt"]),
    ("kick", "kicks", "kicked", ["the ball", "the door", "a stone"]),
    ("talk", "talks", "talked", ["to the teacher", "about the trip", "on the phone"]),
]
SING_SUBJ = ["Anna", "Tom", "My brother", "The teacher", "Our neighbor", "The boy", "She", "He", "Maria", "Grandpa"]
PLUR_SUBJ = ["We", "They", "The children", "My parents", "I", "You", "The students"]

WORDS = sorted({w for w, _ in PLURALS} | {"garden", "window", "orange", "pencil", "river", "yellow",
               "kitchen", "planet", "rabbit", "guitar", "winter", "bridge", "castle", "forest", "island",
               "ladder", "mirror", "pocket", "rocket", "turtle", "violin", "wagon", "basket", "candle",
               "jacket", "lemon", "monkey", "noodle", "pillow", "spider", "tiger", "whistle"})

DAYS_OF_WEEK = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]

NAME_A = [
    ("Name a color.", ["Blue.", "Red.", "Green.", "Yellow.", "Purple."]),
    ("Name a fruit.", ["An apple.", "A banana.", "A pear.", "A mango.", "A cherry."]),
    ("Name a vegetable.", ["A carrot.", "A potato.", "Broccoli.", "A cucumber.", "Spinach."]),
    ("Name an animal that lives in the ocean.", ["A dolphin.", "A whale.", "An octopus.", "A shark."]),
    ("Name a farm animal.", ["A cow.", "A pig.", "A sheep.", "A goat.", "A chicken."]),
    ("Name a musical instrument.", ["A piano.", "A guitar.", "A violin.", "A flute.", "A drum."]),
    ("Name a planet in our solar system.", ["Mars.", "Jupiter.", "Saturn.", "Venus.", "Earth."]),
    ("Name a day of the weekend.", ["Saturday.", "Sunday."]),
    ("Name a season of the year.", ["Spring.", "Summer.", "Autumn.", "Winter."]),
    ("Name a shape with three sides.", ["A triangle."]),
    ("Name a primary color.", ["Red.", "Blue.", "Yellow."]),
    ("Name a bird that cannot fly.", ["A penguin.", "An ostrich.", "An emu.", "A kiwi."]),
    ("Name a mammal that can fly.", ["A bat."]),
    ("Name a continent.", ["Africa.", "Asia.", "Europe.", "Australia.", "South America."]),
    ("Name a month that has 31 days.", ["January.", "March.", "May.", "July.", "August.", "October.", "December."]),
    ("Name something you use to write.", ["A pencil.", "A pen.", "A piece of chalk."]),
    ("Name an insect.", ["An ant.", "A bee.", "A butterfly.", "A beetle."]),
    ("Name a sport played with a ball.", ["Football.", "Tennis.", "Basketball.", "Volleyball."]),
]

# records per family: (with input) and (without input)
INSTR_COUNTS = {
    "upper": 20, "opposite_in": 20, "add_in": 25, "past_sentence": 20, "translate_num": 20, "count_letters": 15,
    "plural": 40, "capital": 30, "arith": 60, "opposite_q": 30, "past_verb": 25, "even_odd": 30,
    "next_day_month": 19, "write_num": 28, "name_a": 18,
}


def pick(pool: list, n: int, name: str) -> list:
    if len(pool) < n:
        raise SystemExit(f"instruction family {name}: only {len(pool)} items for {n}")
    return rng.sample(pool, n)


def make_instructions() -> dict:
    fams: dict[str, list[dict]] = {}

    def rec(instruction: str, output: str, inp: str = "") -> dict:
        return {"instruction": instruction, "input": inp, "output": output}

    c = INSTR_COUNTS
    # --- with input -------------------------------------------------------
    fams["upper"] = [rec("Convert the following word to uppercase.", w.upper(), w)
                     for w in pick(WORDS, c["upper"], "upper")]
    both = [(a, b) for a, b, _ in OPPOSITES] + [(b, a) for a, b, rev in OPPOSITES if rev]
    both = list(dict((a, (a, b)) for a, b in both).values())  # one answer per word
    opp = rng.sample(both, c["opposite_in"] + c["opposite_q"])
    fams["opposite_in"] = [rec("Give the opposite of the word.", b, a) for a, b in opp[: c["opposite_in"]]]
    fams["opposite_q"] = [rec(f"What is the opposite of {a}?", f"The opposite of {a} is {b}.")
                          for a, b in opp[c["opposite_in"]:]]
    pairs = [(a, b) for a in range(1, 51) for b in range(1, 51)]
    fams["add_in"] = [rec("Add the two numbers.", str(a + b), f"{a} and {b}")
                      for a, b in pick(pairs, c["add_in"], "add_in")]
    sentences = []
    for base, third, past, objects in VERBS:
        for obj in objects:
            for subj in SING_SUBJ:
                sentences.append((f"{subj} {third} {obj}.", f"{subj} {past} {obj}."))
            for subj in PLUR_SUBJ:
                sentences.append((f"{subj} {base} {obj}.", f"{subj} {past} {obj}."))
    fams["past_sentence"] = [rec("Rewrite the sentence in past tense.", out, inp)
                             for inp, out in pick(sentences, c["past_sentence"], "past_sentence")]
    nums = rng.sample(range(0, 101), c["translate_num"] + c["write_num"])
    fams["translate_num"] = [rec("Translate the number into words.", number_words(n), str(n))
                             for n in nums[: c["translate_num"]]]
    letters = [w for w in WORDS if w not in {r["input"] for r in fams["upper"]}]
    fams["count_letters"] = [rec("Count the letters in the word.", f"The word {w} has {len(w)} letters.", w)
                             for w in pick(letters, c["count_letters"], "count_letters")]
    # --- without input ----------------------------------------------------
    fams["plural"] = [rec(f"What is the plural of {s}?", f"The plural of {s} is {p}.")
                      for s, p in pick(PLURALS, c["plural"], "plural")]
    fams["capital"] = [rec(f"What is the capital of {country}?", f"The capital of {country} is {city}.")
                       for country, city in pick(CAPITALS, c["capital"], "capital")]
    arith = [(a, "plus", b, a + b) for a in range(1, 21) for b in range(1, 21)]
    arith += [(a, "minus", b, a - b) for a in range(1, 21) for b in range(1, a + 1)]
    fams["arith"] = [rec(f"What is {a} {op} {b}?", f"{a} {op} {b} is {r}.")
                     for a, op, b, r in pick(arith, c["arith"], "arith")]
    verbs_left = [v for v in VERBS]
    fams["past_verb"] = [rec(f"What is the past tense of {base}?", f"The past tense of {base} is {past}.")
                         for base, _, past, _ in pick(verbs_left, c["past_verb"], "past_verb")]
    fams["even_odd"] = [rec(f"Is {n} an even or an odd number?",
                            f"{n} is an {'even' if n % 2 == 0 else 'odd'} number.")
                        for n in pick(list(range(1, 101)), c["even_odd"], "even_odd")]
    nd = [rec(f"What day comes after {d}?", f"The day after {d} is {DAYS_OF_WEEK[(i + 1) % 7]}.")
          for i, d in enumerate(DAYS_OF_WEEK)]
    nd += [rec(f"What month comes after {m}?", f"The month after {m} is {MONTHS[(i + 1) % 12]}.")
           for i, m in enumerate(MONTHS)]
    fams["next_day_month"] = pick(nd, c["next_day_month"], "next_day_month")
    big = [n for n in range(101, 1000) if n % 7 == 0]
    write_nums = nums[c["translate_num"]:][:12] + rng.sample(big, c["write_num"] - 12)
    fams["write_num"] = [rec(f"Write the number {n} in words.", number_words(n)) for n in write_nums]
    fams["name_a"] = [rec(q, rng.choice(answers)) for q, answers in pick(NAME_A, c["name_a"], "name_a")]

    records = [r for fam in fams.values() for r in fam]
    rng.shuffle(records)
    out = HERE / "instructions"
    out.mkdir(exist_ok=True)
    (out / "instructions.json").write_text(json.dumps(records, indent=1, ensure_ascii=False) + "\n",
                                           encoding="utf-8")
    return {"records": len(records), "with_input": sum(1 for r in records if r["input"]),
            "families": {k: len(v) for k, v in fams.items()}}


# ---------------------------------------------------------------------------
# 4. README
# ---------------------------------------------------------------------------


def pct(counter: Counter, label: str) -> str:
    total = sum(counter.values())
    return f"{label} {counter[label]} ({100 * counter[label] / total:.0f}%)"


def make_readme(sent: dict, lyr: dict, ins: dict) -> None:
    tr, te = sent["train"], sent["test"]
    labels = ("neutral", "positive", "negative")
    text = f"""# Sample data sets

Small, original data sets for the offline demos of the hf-recipes recipes. Every file here was
generated by `make_samples.py` (Python standard library only, `random.Random(0)`, so re-running it
reproduces the files exactly) from templates and word banks written for this project; no text was
taken from another corpus, so the files carry no third-party license and are distributed with the
project under its own license.

`sentiment/train.csv` and `sentiment/test.csv` are a text-classification set of short tweet-like
messages with the columns `text,sentiment` (UTF-8, header row). train.csv has {sum(tr.values())} rows
({", ".join(pct(tr, l) for l in labels)}) and test.csv has {sum(te.values())} rows
({", ".join(pct(te, l) for l in labels)}), so always predicting the majority class `neutral` scores
about {100 * te["neutral"] / sum(te.values()):.0f}%. The label is carried by sentiment words and phrases
("love", "amazing", "so tired of", "awful", ...) while neutral rows are plain statements about plans,
times and places. No text appears twice, and no test text appears in train (also after ignoring case,
punctuation, mentions and hashtags).

`lyrics/songs.txt` is a language-modelling corpus of {lyr["songs"]} short rhyming songs in a simple
folk, ballad and nursery-rhyme style ({lyr["lines"]} lines in all, 4 to 12 lines per song). Songs are
separated by exactly one blank line and contain no blank lines themselves.

`instructions/instructions.json` is an Alpaca-style instruction-tuning set: a JSON list of
{ins["records"]} records, each with exactly the string keys `instruction`, `input` and `output`;
{ins["records"] - ins["with_input"]} records ({100 * (ins["records"] - ins["with_input"]) / ins["records"]:.0f}%) have an
empty `input`. The tasks are small, checkable families (uppercase a word, opposites, adding numbers,
past tense, plurals, capitals, numbers in words, even or odd, the next day or month, naming an example
of a category), all with correct answers, and no (instruction, input) pair is repeated.
"""
    (HERE / "README.md").write_text(text, encoding="utf-8")


def main() -> None:
    sent = make_sentiment()
    lyr = make_lyrics()
    ins = make_instructions()
    make_readme(sent, lyr, ins)
    print("sentiment", dict(sent["train"]), dict(sent["test"]))
    print("lyrics", lyr)
    print("instructions", ins)


if __name__ == "__main__":
    main()
