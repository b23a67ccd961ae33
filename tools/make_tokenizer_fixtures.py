#!/usr/bin/env python3
"""Builds the tokenizer parity fixtures of the examples, and the Unicode tables
the C++ tokenizers classify characters with.

Two commands (run with the project venv after
`.venv/bin/python -m pip install tokenizers sentencepiece transformers protobuf`;
CI never runs this script, it uses the committed outputs):

  make_tokenizer_fixtures.py fixtures
      Trains three small tokenizers on the text of Debian's `fortunes` and
      `fortunes-de` packages (apt-get install fortunes fortunes-de) and writes
      them with the reference ids of held-out lines to
      hf/tests/fixtures/tokenizers/:
        gpt2/vocab.json, gpt2/merges.txt     ByteLevel BPE (HF `tokenizers`)
        bert/vocab.txt                       WordPiece     (HF `tokenizers`)
        xlmr/sentencepiece.bpe.model         SentencePiece unigram (`sentencepiece`)
        expected.json                        texts and the reference ids
      Running it again rewrites the same bytes (with the versions recorded in
      expected.json).

  make_tokenizer_fixtures.py unicode-tables
      Writes hf/src/tokenizers/unicode_tables.inc. The character
      classes are *measured* from the reference implementation, one code point
      at a time, rather than taken from a Unicode database: HF `tokenizers`
      uses Oniguruma's tables for the GPT-2 regex and two older crates for the
      BERT normalizer, each at its own Unicode version, and parity means
      matching what they do (e.g. U+0085 is whitespace to the GPT-2 regex but
      removed as a control character by the BERT normalizer).
"""
import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "hf/tests/fixtures/tokenizers"
TABLES = ROOT / "hf/src/tokenizers/unicode_tables.inc"
FORTUNES = Path("/usr/share/games/fortunes")

ENGLISH_FILES = ["fortunes", "literature", "science", "wisdom", "people", "politics",
                 "computers", "humorists", "work", "songs-poems"]
GERMAN_FILES = ["de/zitate", "de/sprichworte", "de/witze", "de/murphy", "de/stilblueten",
                "de/wusstensie", "de/gedichte"]
HELD_OUT_EVERY = 40  # every 40th fortune is never seen in training

# Lines no fortune contains: emoji (incl. a ZWJ sequence and a flag), CJK,
# Hangul, accents, Greek final sigma, a dotted capital I, control and format
# characters, odd whitespace. Marked "synthetic" in expected.json.
SYNTHETIC = [
    "Emoji: 🙂👍🏽 and a family 👨‍👩‍👧 next to the flag 🇩🇪!",
    "中文字符和日本語のテキスト、한국어 문장도 있습니다。",
    "Crème brûlée, jalapeño, Ångström, naïve façade, ΟΔΟΣ Σίσυφος, İstanbul.",
    "tabs\tand\u00a0no-break\u2003em space\u3000ideographic  two   three",
    "zero\u200bwidth, soft\u00adhyphen, bell\u0007 and NUL-free control\u001b[0m end",
    "We'll see: it's 3.14159 or 2,718 — isn't it?!... (yes) [no] {maybe} <ok>",
    "   leading spaces, trailing spaces   ",
    "line one\nline two\r\nline three\n\n\nafter blank lines",
    "Übergrößenträger ÄÖÜ äöü ß ẞ",
    "",
]
PAIRS = [  # (premise, hypothesis) for the pair encodings
    ("Der Hund schläft im Garten.", "Ein Tier ruht sich aus."),
    ("A man is playing a guitar on stage.", "Nobody is making music."),
    ("Zwölf Boxkämpfer jagen Viktor quer über den großen Sylter Deich.", "Viktor läuft."),
]


def read_fortunes(name):
    """The entries of one fortune file, in file order ('%' lines separate them)."""
    text = (FORTUNES / name).read_text(encoding="utf-8")
    entries = [e.strip("\n") for e in re.split(r"^%$", text, flags=re.M)]
    return [e for e in entries if e.strip()]


def corpus():
    """(training entries, held-out entries with their source), deterministic."""
    train, held = [], []
    for name in ENGLISH_FILES + GERMAN_FILES:
        for index, entry in enumerate(read_fortunes(name)):
            if index % HELD_OUT_EVERY == HELD_OUT_EVERY - 1:
                held.append((f"fortunes:{name}#{index}", entry))
            else:
                train.append(entry)
    return train, held


def pick_cases(held):
    """Held-out entries chosen for what they exercise, first matches in order."""
    wanted = [
        ("umlaut", lambda t: re.search("[äöüÄÖÜß]", t), 8),
        ("digits", lambda t: re.search(r"\d", t), 4),
        ("punctuation run", lambda t: re.search(r"[^\w\s]{3,}", t), 4),
        ("multiple spaces", lambda t: "  " in t, 4),
        ("tab", lambda t: "\t" in t, 3),
        ("multi-line", lambda t: t.count("\n") >= 2, 4),
        ("contraction", lambda t: re.search(r"'(s|t|re|ve|m|ll|d)\b", t), 3),
        ("non-ASCII other than German", lambda t: re.search("[^\x00-\x7fäöüÄÖÜß]", t), 4),
        ("plain", lambda t: True, 4),
    ]
    chosen, seen = [], set()
    for reason, predicate, count in wanted:
        for source, text in held:
            if count == 0:
                break
            if source not in seen and len(text) <= 400 and predicate(text):
                chosen.append({"source": source, "why": reason, "text": text})
                seen.add(source)
                count -= 1
    return chosen


def make_fixtures():
    from tokenizers import ByteLevelBPETokenizer, BertWordPieceTokenizer, normalizers
    import sentencepiece as spm
    import tokenizers
    import transformers

    train, held = corpus()
    cases = pick_cases(held) + [{"source": "synthetic", "why": "coverage", "text": t} for t in SYNTHETIC]
    work = FIXTURES / "_training_text.txt"
    FIXTURES.mkdir(parents=True, exist_ok=True)
    work.write_text("\n".join(train) + "\n", encoding="utf-8")
    try:
        # GPT-2 style byte-level BPE: no prefix space, <|endoftext|> as the only special.
        gpt2_dir = FIXTURES / "gpt2"
        gpt2_dir.mkdir(exist_ok=True)
        bpe = ByteLevelBPETokenizer(add_prefix_space=False)
        bpe.train([str(work)], vocab_size=800, min_frequency=2, special_tokens=["<|endoftext|>"],
                  show_progress=False)
        bpe.save_model(str(gpt2_dir))
        gpt2 = ByteLevelBPETokenizer(str(gpt2_dir / "vocab.json"), str(gpt2_dir / "merges.txt"),
                                     add_prefix_space=False)

        # BERT WordPiece (uncased: lower-casing and accent stripping).
        bert_dir = FIXTURES / "bert"
        bert_dir.mkdir(exist_ok=True)
        wp = BertWordPieceTokenizer(lowercase=True)
        wp.train([str(work)], vocab_size=1000, min_frequency=2, limit_alphabet=300,
                 special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], show_progress=False)
        wp.save_model(str(bert_dir))
        # The trainer orders equally frequent tokens by hash-map iteration, so
        # ids change from run to run; WordPiece only asks whether a piece is in
        # the vocabulary, so sorting (specials kept first) makes the file
        # reproducible without changing any segmentation.
        vocab_txt = bert_dir / "vocab.txt"
        tokens = vocab_txt.read_text(encoding="utf-8").split("\n")[:-1]
        specials = tokens[:5]
        assert specials == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], specials
        vocab_txt.write_text("\n".join(specials + sorted(tokens[5:])) + "\n", encoding="utf-8")
        uncased = BertWordPieceTokenizer(str(bert_dir / "vocab.txt"), lowercase=True)
        cased = BertWordPieceTokenizer(str(bert_dir / "vocab.txt"), lowercase=False)

        # SentencePiece with XLM-R's control ids (unk 0, bos 1, eos 2, no pad).
        # Unigram, like XLM-R's own "sentencepiece.bpe.model" (a unigram model
        # despite its name). XLM-R normalizes with nmt_nfkc, whose charsmap
        # alone is ~240 KB; the fixture keeps the part of it that decides
        # segmentation on these texts (whitespace and line breaks become spaces)
        # as a custom rule table of a few bytes. Normalization itself is
        # libsentencepiece's job on the C++ side, not the tokenizer's.
        xlmr_dir = FIXTURES / "xlmr"
        xlmr_dir.mkdir(exist_ok=True)
        rules = FIXTURES / "_normalization_rules.tsv"
        spaces = [0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0xA0, 0x3000] + list(range(0x2000, 0x200B))
        rules.write_text("".join(f"{cp:X}\t20\n" for cp in spaces))
        try:
            spm.SentencePieceTrainer.train(
                input=str(work), model_prefix=str(xlmr_dir / "sentencepiece.bpe"),
                model_type="unigram", vocab_size=800, character_coverage=0.9995,
                normalization_rule_tsv=str(rules), unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
                input_sentence_size=0, minloglevel=2)
        finally:
            rules.unlink()
        (xlmr_dir / "sentencepiece.bpe.vocab").unlink()
        # The reference: transformers' XLM-R tokenizer built from that model file.
        xlmr = transformers.XLMRobertaTokenizer.from_pretrained(str(xlmr_dir))
        sp = spm.SentencePieceProcessor(model_file=str(xlmr_dir / "sentencepiece.bpe.model"))
    finally:
        work.unlink()

    for case in cases:
        text = case["text"]
        ids = gpt2.encode(text).ids
        assert gpt2.decode(ids) == text, f"GPT-2 reference does not round-trip {text!r}"
        case["gpt2"] = ids
        case["bert_uncased"] = uncased.encode(text, add_special_tokens=False).ids
        case["bert_cased"] = cased.encode(text, add_special_tokens=False).ids
        case["xlmr"] = xlmr(text, add_special_tokens=False)["input_ids"]
        # Cross-check the two references: fairseq's dictionary puts <s> <pad>
        # </s> <unk> first, so spm id i is i + 1, and spm's unk (0) is <unk>.
        fairseq = [i + 1 if i else xlmr.unk_token_id for i in sp.encode(text)]
        assert case["xlmr"] == fairseq, f"transformers and sentencepiece disagree on {text!r}"
    pairs = []
    for a, b in PAIRS:
        u = uncased.encode(a, b)
        x = xlmr(a, b)
        pairs.append({"a": a, "b": b, "bert_uncased": {"ids": u.ids, "type_ids": u.type_ids},
                      "xlmr": {"ids": x["input_ids"]}})
    expected = {
        "about": "Reference ids for the C++ tokenizer parity tests; written by "
                 "tools/make_tokenizer_fixtures.py fixtures. Texts: held-out fortunes "
                 "(Debian packages fortunes, fortunes-de) and a few synthetic lines.",
        "references": {"tokenizers": tokenizers.__version__, "sentencepiece": spm.__version__,
                       "transformers": transformers.__version__},
        "specials": {
            "gpt2": {"eos": gpt2.token_to_id("<|endoftext|>"), "vocab_size": gpt2.get_vocab_size()},
            "bert": {n: uncased.token_to_id(t) for n, t in
                     [("pad", "[PAD]"), ("unk", "[UNK]"), ("cls", "[CLS]"), ("sep", "[SEP]"),
                      ("mask", "[MASK]")]} | {"vocab_size": uncased.get_vocab_size()},
            "xlmr": {"bos": xlmr.bos_token_id, "pad": xlmr.pad_token_id, "eos": xlmr.eos_token_id,
                     "unk": xlmr.unk_token_id, "mask": xlmr.mask_token_id, "vocab_size": len(xlmr)},
        },
        "cases": cases,
        "pairs": pairs,
    }
    text = json.dumps(expected, ensure_ascii=False, indent=1)
    # One line per id list keeps the file small and diffs readable.
    text = re.sub(r"\[[\d,\s]*\]", lambda m: re.sub(r"\s+", "", m.group(0)).replace(",", ", "), text)
    (FIXTURES / "expected.json").write_text(text + "\n", encoding="utf-8")
    for path in sorted(FIXTURES.rglob("*")):
        if path.is_file():
            print(f"{path.relative_to(ROOT)}: {path.stat().st_size} bytes")


# --- Unicode tables ------------------------------------------------------------

FLAG_NAMES = [  # bit order; the C++ enum in unicode.h must match
    "kLetter",            # GPT-2 regex \p{L}
    "kNumber",            # GPT-2 regex \p{N}
    "kSpace",             # GPT-2 regex \s
    "kBertControl",       # BERT clean_text removes it
    "kBertSpace",         # BERT clean_text turns it into ' '
    "kBertPunctuation",   # BERT pre-tokenizer isolates it
    "kBertWhitespace",    # BERT pre-tokenizer splits on it
    "kCjk",               # BERT handle_chinese_chars surrounds it with spaces
    "kStripRemoves",      # BERT strip_accents deletes it (a combining mark)
]
HANGUL_FIRST, HANGUL_COUNT = 0xAC00, 11172


def hangul_nfd(cp):
    """The algorithmic Hangul syllable decomposition (Unicode 3.12)."""
    index = cp - HANGUL_FIRST
    lead, vowel, trail = 0x1100 + index // 588, 0x1161 + (index % 588) // 28, 0x11A7 + index % 28
    return [lead, vowel] + ([trail] if trail != 0x11A7 else [])


def make_unicode_tables():
    import tokenizers
    from tokenizers import normalizers, pre_tokenizers

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    bert_pre = pre_tokenizers.BertPreTokenizer()

    def bert(**kw):
        options = dict(clean_text=False, handle_chinese_chars=False, strip_accents=False, lowercase=False)
        options.update(kw)
        return normalizers.BertNormalizer(**options)

    clean, cjk, strip, lower = (bert(clean_text=True), bert(handle_chinese_chars=True),
                                bert(strip_accents=True), bert(lowercase=True))

    def pieces(text):
        return len(byte_level.pre_tokenize_str(text))

    flags = [0] * 0x110000
    strip_map, lower_map = [], []
    for cp in range(0x110000):
        if 0xD800 <= cp < 0xE000:
            continue  # not a scalar value; never decoded from valid UTF-8
        c = chr(cp)
        f = 0
        # GPT-2 regex: one piece when glued between two of a class means "same class".
        if pieces("x" + c + "x") == 1:
            f |= 1 << 0
        elif pieces("1" + c + "1") == 1:
            f |= 1 << 1
        elif pieces("!" + c + "!") != 1:
            f |= 1 << 2
        cleaned = clean.normalize_str(c)
        if cleaned == "":
            f |= 1 << 3
        elif cleaned == " " and c != " ":
            f |= 1 << 4
        else:
            assert cleaned == c, hex(cp)
        split = len(bert_pre.pre_tokenize_str("a" + c + "a"))
        if split == 3:
            f |= 1 << 5
        elif split == 2:
            f |= 1 << 6
        padded = cjk.normalize_str(c)
        if padded != c:
            assert padded == " " + c + " ", hex(cp)
            f |= 1 << 7
        stripped = [ord(x) for x in strip.normalize_str(c)]
        if not stripped:
            f |= 1 << 8
        elif HANGUL_FIRST <= cp < HANGUL_FIRST + HANGUL_COUNT:
            assert stripped == hangul_nfd(cp), hex(cp)
        elif stripped != [cp]:
            assert len(stripped) <= 3, hex(cp)
            strip_map.append((cp, stripped))
        lowered = [ord(x) for x in lower.normalize_str(c)]
        if lowered != [cp]:
            assert 1 <= len(lowered) <= 3, hex(cp)
            lower_map.append((cp, lowered))
        flags[cp] = f

    runs = [(0, flags[0])]
    for cp in range(1, 0x110000):
        if flags[cp] != runs[-1][1]:
            runs.append((cp, flags[cp]))

    def seq(values):
        return "{" + ", ".join(f"0x{v:X}" for v in values) + "}"

    out = [
        "// Generated by tools/make_tokenizer_fixtures.py unicode-tables; do not edit.",
        f"// Measured from HF tokenizers {tokenizers.__version__} (Python "
        f"{sys.version.split()[0]}), one code point at a time: see that script for why.",
        "// Included by unicode.cpp only.",
        "",
        "// Code point runs: a run starts at `first` and lasts until the next run; its",
        "// bits are the CharClass flags of unicode.h.",
        f"constexpr CodePointRun kCodePointRuns[{len(runs)}] = {{",
    ]
    line = ""
    for first, f in runs:
        item = f"{{0x{first:X}, 0x{f:X}}}, "
        if len(line) + len(item) > 96:
            out.append("    " + line.rstrip())
            line = ""
        line += item
    out.append("    " + line.rstrip())
    out.append("};")
    for name, table, why in [
        ("kStripAccentsMap", strip_map,
         "strip_accents: NFD without its combining marks (Hangul is computed)"),
        ("kLowercaseMap", lower_map, "lowercase: the full per-character lowercase mapping"),
    ]:
        out.append("")
        out.append(f"// {why}; sorted by code point.")
        out.append(f"constexpr CodePointMapping {name}[{len(table)}] = {{")
        line = ""
        for cp, to in table:
            item = f"{{0x{cp:X}, {len(to)}, {seq(to + [0] * (3 - len(to)))}}}, "
            if len(line) + len(item) > 96:
                out.append("    " + line.rstrip())
                line = ""
            line += item
        out.append("    " + line.rstrip())
        out.append("};")
    TABLES.write_text("\n".join(out) + "\n", encoding="utf-8")
    print(f"{TABLES.relative_to(ROOT)}: {len(runs)} runs, {len(strip_map)} strip mappings, "
          f"{len(lower_map)} lowercase mappings, {TABLES.stat().st_size} bytes")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["fixtures", "unicode-tables"])
    args = parser.parse_args()
    if args.command == "fixtures":
        if not FORTUNES.is_dir():
            sys.exit(f"{FORTUNES} is missing: apt-get install fortunes fortunes-de")
        make_fixtures()
    else:
        make_unicode_tables()


if __name__ == "__main__":
    main()
