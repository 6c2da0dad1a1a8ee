"""Structured output: a grammar (JSON schema, regex, Lark or GBNF) that masks what the target may say."""
