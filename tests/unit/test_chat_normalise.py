"""The chat pre-pass: what a listener hears for handles, links, emotes, stretched letters, caps, slang, leetspeak."""

from __future__ import annotations

import time

import pytest

from spark_runtime.normalise.chat import EMOTES, chat_prepass, needs_wfst


def case(text: str, heard: str):
    return pytest.param(text, heard, id=text[:40])


@pytest.mark.parametrize(
    ("text", "heard"),
    [
        case("@xX_gamer_Xx hi", "gamer hi"),
        case("@CoolCat99 thanks!", "Cool Cat thanks!"),
        case("@sparky_fan what's up", "sparky fan what's up"),
        case("welcome @xXDragonSlayerXx", "welcome Dragon Slayer"),
        case("@n00bmaster69 lol", "noobmaster lol"),
        case("hey @TTSFan and @Spark_AI, welcome", "hey TTS Fan and Spark AI, welcome"),
        case("@ alone", "@ alone"),
        case("mail bob@example.com please", "mail bob@example.com please"),
    ],
)
def test_handles_are_read_as_the_name(text, heard):
    assert chat_prepass(text) == heard


@pytest.mark.parametrize(
    ("text", "heard"),
    [
        case("check https://twitch.tv/foo.", "check a link."),
        case("go to twitch.tv/sparky and youtube.com/watch?v=abc", "go to a link and a link"),
        case("visit www.example.org, now", "visit a link, now"),
        case("see http://example.com/a?b=1#c for more", "see a link for more"),
        case('he said "go to reddit.com/r/gaming"', 'he said "go to a link"'),
        case("see [the docs](https://example.com/docs) first", "see the docs first"),
        case("e.g. this, i.e. that", "e.g. this, i.e. that"),
    ],
)
def test_links_are_a_link(text, heard):
    assert chat_prepass(text) == heard


@pytest.mark.parametrize(
    ("text", "heard"),
    [
        case("KEKW that was funny", "that was funny"),
        case("KEKW, that was funny", "that was funny"),
        case("LUL OMEGALUL", ""),
        case("KEKW KEKW KEKW", ""),
        case("Pog Pog POGGERS", "pog"),
        case("PogChamp that clutch", "pog that clutch"),
        case("EZ Clap", "easy clap"),
        case("nice play Sadge", "nice play"),
        case("Kappa sure buddy", "sure buddy"),
        case("4Head", ""),
        case("catJAM catJAM vibing", "vibing"),
        case("GIGACHAD move", "gigachad move"),
        case("COPIUM next game", "copium next game"),
        case("HeyGuys chat", "hey guys chat"),
        case("monkaS that was close", "that was close"),
        case("kappa is a greek letter", "kappa is a greek letter"),  # emotes are case-sensitive
        case("Pogo stick", "Pogo stick"),  # whole words only
    ],
)
def test_emotes_are_dropped_or_said(text, heard):
    assert chat_prepass(text) == heard


def test_the_emote_table_is_big_enough_and_spoken_forms_are_lower_case_words():
    assert len(EMOTES) >= 30
    for spoken in EMOTES.values():
        assert spoken == spoken.lower() and all(w.isalpha() for w in spoken.split())


@pytest.mark.parametrize(
    ("text", "heard"),
    [
        case("that's cute :) <3", "that's cute"),
        case("xD so funny :D", "so funny"),
        case("love you <333", "love you"),
        case("well :/ okay", "well okay"),
        case(":pepeLaugh: lmao", "lmao"),
        case("lol 😂😂 nice 🔥", "lol nice"),
        case("gg 👍🏽 everyone", "good game everyone"),
        case("🎉🎉🎉", ""),
        case("it's 10:30 :)", "it's 10:30"),
    ],
)
def test_emoticons_and_emoji_are_dropped(text, heard):
    assert chat_prepass(text) == heard


@pytest.mark.parametrize(
    ("text", "heard"),
    [
        case("sooooo good", "so good"),
        case("noooo way", "no way"),
        case("yesss", "yes"),
        case("hiiii chat", "hi chat"),
        case("lmaooo", "lmao"),
        case("cooool", "cool"),
        case("that's tooooo much", "that's too much"),
        case("goooood morning", "good morning"),
        case("hellllooooo chat", "hello chat"),
        case("cool too book bee", "cool too book bee"),
        case("World War III and AAA games", "World War III and AAA games"),
        case("the XXXTentacion song", "the XXXTentacion song"),
        case("what!!!! really??? how?!?!", "what! really? how?!"),
        case("wait.......", "wait..."),
        case("wait...", "wait..."),
        case("zzz so sleepy", "zzz so sleepy"),
    ],
)
def test_stretched_letters_and_punctuation_collapse(text, heard):
    assert chat_prepass(text) == heard


@pytest.mark.parametrize(
    ("text", "heard"),
    [
        case("THIS IS AMAZING", "This is amazing"),
        case("that was INSANE", "that was insane"),
        case("I LOVE NASA SO MUCH", "I love NASA so much"),
        case("I'M SO HAPPY RIGHT NOW", "I'm so happy right now"),
        case("I GOT 100 SUBS", "I got 100 subs"),
        case("HELLO @CoolCat99 WELCOME", "Hello Cool Cat welcome"),
        case("NOOO WAY", "No way"),
        case("the JSON and HTML files", "the JSON and HTML files"),
        case("the new AI on TV", "the new AI on TV"),
        case("WOW nice", "WOW nice"),  # 2-3 letter caps words are kept in a mixed line
        case("OMG THAT WAS INSANE", "Oh my god that was insane"),
        case("the NSFW tag and the HTTPS link", "the NSFW tag and the HTTPS link"),  # no vowel: an acronym
        case("The IEEE and ACLU agree", "The IEEE and ACLU agree"),
        case("HMMMM WHAT IS THIS", "Hmm what is this"),
    ],
)
def test_shouting_becomes_lower_case(text, heard):
    assert chat_prepass(text) == heard


@pytest.mark.parametrize(
    ("text", "heard"),
    [
        case("w/ friends w/o lag w/chat", "with friends without lag with chat"),
        case("tbh idk, brb", "to be honest I don't know, be right back"),
        case("TBH that was great", "To be honest that was great"),
        case("irl imo imho btw afk", "in real life in my opinion in my humble opinion by the way away from keyboard"),
        case("gg ggs glhf", "good game good games good luck have fun"),
        case("GG", "Good game"),
        case("ty thx np pls plz", "thank you thanks no problem please please"),
        case("Ty for the raid!", "Thank you for the raid!"),
        case("omg ngl fr rn nvm", "oh my god not gonna lie for real right now never mind"),
        case("ikr smh tho", "I know right shaking my head though"),
        case("u r cool", "you are cool"),
        case("r u ok", "are you ok"),
        case("ur stream b4 gr8 l8r", "your stream before great later"),
        case("that's crazy fr.", "that's crazy for real."),
        case("lol lmao", "lol lmao"),
        case("Dr. Smith met Mr. Jones on St. Patrick's day", "Dr. Smith met Mr. Jones on St. Patrick's day"),
        case("R is a language", "R is a language"),
        case("U.S. news", "U.S. news"),
        case("solving NP-hard problems", "solving NP-hard problems"),
        case("omgggg", "oh my god"),
        case("must-try the tiramisu", "must-try the tiramisu"),
        case("I visited Ur last year", "I visited Ur last year"),  # title case mid-sentence: a name
        case("Fr. Murphy gave the sermon", "Fr. Murphy gave the sermon"),  # a title before a name
        case("I love U", "I love you"),
    ],
)
def test_chat_abbreviations_are_expanded(text, heard):
    assert chat_prepass(text) == heard


@pytest.mark.parametrize(
    ("text", "heard"),
    [
        case("n00b", "noob"),
        case("l33t skills", "leet skills"),
        case("h4x0r", "haxor"),
        case("get pwn3d", "get pwned"),
        case("sk1ll issue", "skill issue"),
        case("e1ite", "elite"),
        case("N00B", "noob"),
        case("that was a pr0 gamer move", "that was a pro gamer move"),
        case("br0", "bro"),
    ],
)
def test_leetspeak_words_are_read_as_words(text, heard):
    assert chat_prepass(text) == heard


@pytest.mark.parametrize(
    "text",
    [
        "$3.50",
        "7:30pm",
        "1st 22nd 3rd 4th",
        "5km",
        "4K",
        "1080x720",
        "in 2024",
        "1080p",
        "60fps",
        "GPT-4",
        "v1.2",
        "1v1",
        "mp3 MP3s PS5 RTX4090 win10 P0 x0",
        "it costs $1,299.99 on 12/25/2024",
        "the m4a file",
        "cool",
        "too",
        "book",
        "Dr. Who",
        "No. 5",
        "I paid 50% of it",
        "Hello there, how are you?",
        "World War II",
    ],
)
def test_numbers_and_plain_text_stay_as_they_are(text):
    assert chat_prepass(text) == text


@pytest.mark.parametrize(
    "text, heard",
    [
        ("live 24/7", "live twenty-four seven"),
        ("my #1 fan", "my number 1 fan"),
        ("that is 3x faster", "that is 3 times faster"),
        ("we hit $10k", "we hit 10 thousand dollars"),
        ("10k followers", "10 thousand followers"),
        ("2.5 GB of RAM", "2.5 gigabytes of RAM"),
        ("16GB", "16 gigabytes"),
        ("98765 views", "98,765 views"),
    ],
)
def test_number_shorthand_is_written_the_way_the_grammars_read_right(text, heard):
    assert chat_prepass(text) == heard


def test_whitespace_is_collapsed_and_stripped():
    assert chat_prepass("  hello \t  there \n chat  ") == "hello there chat"
    assert chat_prepass("") == ""
    assert chat_prepass("   ") == ""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I paid $3.50", True),
        ("see you at 7:30", True),
        ("we got 1,250 followers", True),
        ("it's 50% off", True),
        ("A & B", True),
        ("we hit #1", True),
        ("2+2=4", True),
        ("and/or", True),
        ("it was 30°C", True),
        ("£20 or €15 or ¥500", True),
        ("Dr. Smith is here", True),
        ("red vs. blue", True),
        ("red vs blue", True),
        ("apples, pears, etc.", True),
        ("e.g. this one", True),
        ("a few km away", True),
        ("World War II", True),
        ("Hello there, how are you?", False),
        ("That was a great play! Really.", False),
        ("I don't know, to be honest.", False),
        ("No way, that's crazy", False),
        ("Drive safe, Steve", False),
        ("", False),
    ],
)
def test_needs_wfst(text, expected):
    assert needs_wfst(text) is expected


def test_it_is_fast():
    lines = [
        "@xX_gamer_Xx KEKW that was INSANE!!!! tbh idk how u did it sooooo fast, check twitch.tv/foo",
        "Hello there, how are you doing today? I paid $3.50 for it at 7:30pm.",
        "n00b l33t h4x0r Pog Pog POGGERS EZ Clap :) <3 🔥🔥",
    ] * 100
    start = time.perf_counter()
    for line in lines:
        needs_wfst(chat_prepass(line))
    assert (time.perf_counter() - start) / len(lines) < 1e-3
