"""LLM evals: a real model answers prompts with the project's tools, each call going through the pipeline.

`suite` reads the eval suites (``evals/*.yml``), `llm` talks to the Anthropic Messages API or any
OpenAI-compatible Chat Completions API with native tool calling, and `runner` holds the conversation
loop and the assertions. ``dbt-mxcp evals`` (cli/evals.py) runs them; see docs/evals.md.
"""
