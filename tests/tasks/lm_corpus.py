"""The small English corpus the language-model task tests train on."""

LM_TEXT = "the quick brown fox jumps over the lazy dog.\n" * 40 + "pack my box with five dozen liquor jugs.\n" * 20
