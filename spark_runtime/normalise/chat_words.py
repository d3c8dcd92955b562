"""The word tables of the chat pre-pass (chat.py): emotes, emoticons, acronyms, chat
abbreviations, and the words that decide stretched letters and leetspeak."""

from __future__ import annotations

# --------------------------------------------------------------------------------------------------------------------
# Emotes (Twitch, BTTV, FFZ, 7TV). Matched case-sensitively, as whole words: "Clap" is the emote, "clap" is a word.
#
# Rule: an emote becomes a word only where the emote *is* a word that streamers and chat say out loud in a sentence
# ("Pog", "EZ" -> "easy", "Clap", "COPIUM", "GIGACHAD", "HeyGuys" -> "hey guys"). An emote that is a face or a
# reaction (laughing, crying, sarcasm, fear, sleep, dancing) is dropped ("" below): the voice cannot show a face, and
# reading its name aloud ("kek double-u", "sadge") is noise. A run of emotes is said once: "Pog Pog POGGERS" -> "pog".
# --------------------------------------------------------------------------------------------------------------------
EMOTES: dict[str, str] = {
    # said out loud
    "Pog": "pog",
    "PogChamp": "pog",
    "POGGERS": "pog",
    "Poggers": "pog",
    "PogU": "pog",
    "EZ": "easy",
    "Clap": "clap",
    "COPIUM": "copium",
    "Copium": "copium",
    "GIGACHAD": "gigachad",
    "Gigachad": "gigachad",
    "HeyGuys": "hey guys",
    # faces and reactions: dropped
    "KEKW": "",
    "KEKL": "",
    "LUL": "",
    "LULW": "",
    "OMEGALUL": "",
    "ICANT": "",
    "Kappa": "",
    "KappaPride": "",
    "Keepo": "",
    "monkaS": "",
    "monkaW": "",
    "monkaHmm": "",
    "PepeHands": "",
    "PepeLaugh": "",
    "pepeLaugh": "",
    "pepeD": "",
    "Pepega": "",
    "peepoHappy": "",
    "peepoSad": "",
    "Sadge": "",
    "Deadge": "",
    "FeelsBadMan": "",
    "FeelsGoodMan": "",
    "FeelsStrongMan": "",
    "FeelsOkayMan": "",
    "4Head": "",
    "5Head": "",
    "BibleThump": "",
    "Jebaited": "",
    "ResidentSleeper": "",
    "VoHiYo": "",
    "CoolStoryBob": "",
    "NotLikeThis": "",
    "TriHard": "",
    "WutFace": "",
    "DansGame": "",
    "SeemsGood": "",
    "Kreygasm": "",
    "BabyRage": "",
    "SwiftRage": "",
    "PJSalt": "",
    "BloodTrail": "",
    "FailFish": "",
    "SMOrc": "",
    "MingLee": "",
    "catJAM": "",
    "HYPERS": "",
    "widepeepoHappy": "",
}

# Text emoticons are dropped too, "<3" included: "heart" read aloud mid-sentence sounds like a misreading, and the words
# around it already carry the feeling. They must stand alone (space or line edge before, space, edge or . , ! ? after).
EMOTICONS = [
    ":)", ":-)", ":(", ":-(", ":D", ":-D", ":P", ":p", ":-P", ":-p", ":O", ":o", ":/", ":\\", ":|", ":3",
    ":')", ":'(", ">:(", ";)", ";-)", ";D", ";P", ";p", "=)", "=D", "=(", "(:", "):",
    "xD", "XD", "xDD", "XDD", "xDDD", "XDDD", "^^", "^_^", "^.^", "-_-", "T_T", ";_;", "o/", "\\o/", "</3",
]  # fmt: skip

# Acronyms that keep their capitals (the voice spells or knows them). Other all-caps words of 4+ letters are shouting
# and become lower case; 2-3 letter caps words are kept in a mixed line ("GG", "AI", "TV") but lowered when the whole
# line is shouted, unless listed here.
ACRONYMS = frozenset(
    """
    AI TV PC GG OK VR AR UK EU USA NPC FPS RPG DLC GPU CPU RAM SSD USB NBA NFL NHL UFC WWE BBC CNN HBO GTA MVP XP HP
    CEO FBI CIA DNA NYC FAQ IQ ID DJ MC TTS LLM API URL RGB PS TBA ETA UTC EST PST GMT AM PM DIY PVP PVE MMO AAA
    NASA HTML JSON FIFA UEFA NATO YAML HTTP HTTPS NASCAR NCAA ESPN IKEA LEGO COVID GDPR OLED AMOLED HDMI VRAM JPEG
    ASCII UNIX MIDI IMAX MMORPG MOBA DOTA LOTR NVIDIA ASAP AFAIK LGBT LGBTQ NSFW SCUBA UNESCO NASDAQ AWS IRL
    IEEE ACLU NAACP USSR NYPD LAPD UCLA OPEC ISBN
    """.split()
)

# Chat abbreviations, matched case-insensitively as whole words. "lol" and "lmao" stay (streamers say them);
# "Dr.", "St.", "Mr." are NeMo's. "r" -> "are" and "w/", "w/o" have their own patterns below.
ABBREVIATIONS: dict[str, str] = {
    "irl": "in real life",
    "imo": "in my opinion",
    "imho": "in my humble opinion",
    "tbh": "to be honest",
    "btw": "by the way",
    "idk": "I don't know",
    "idc": "I don't care",
    "brb": "be right back",
    "afk": "away from keyboard",
    "gg": "good game",
    "ggs": "good games",
    "wp": "well played",
    "glhf": "good luck have fun",
    "ez": "easy",
    "ty": "thank you",
    "tysm": "thank you so much",
    "thx": "thanks",
    "np": "no problem",
    "pls": "please",
    "plz": "please",
    "omg": "oh my god",
    "ngl": "not gonna lie",
    "fr": "for real",
    "rn": "right now",
    "nvm": "never mind",
    "ikr": "I know right",
    "smh": "shaking my head",
    "jk": "just kidding",
    "ofc": "of course",
    "tho": "though",
    "u": "you",
    "ur": "your",
    "b4": "before",
    "gr8": "great",
    "l8r": "later",
}

# Words with a legitimate double letter that chat likes to stretch: "cooool" -> "cool", not "col".
DOUBLE_WORDS = frozenset(
    """
    too cool good goodness soon food mood book look boo moo zoo woo noob see bee free tree need feel sweet sleep keep
    meet week yeet all call ball fall well hell hello tell yell sell kill chill still will ill pill full pull troll
    roll off stuff buff ass boss less mess kiss miss pass class grass bless happy sorry funny pretty little really
    silly yummy gg hmm mm shh brr grr wee oops aww
    """.split()
)

# Leetspeak "1" is "i" unless it makes one of these words with "l".
LEET_L_WORDS = frozenset(
    "elite leet lol lel hello cool lame lag loot lord legend level play player played blue clean flag glitch skill"
    " kill noob leeet".split()
)
LEET_SKIP = frozenset({"w3c", "m4a", "m4v", "m4b", "l10n", "a11y", "k3s", "s3c", "se7en"})  # tech names, not leetspeak
