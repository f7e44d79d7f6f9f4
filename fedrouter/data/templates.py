"""Prompt templates that turn an instruction into the text a model continues."""

from __future__ import annotations

from fedrouter.data.errors import DataError

# Every template holds one `{instruction}` field and ends exactly where the response starts,
# so that `format_prompt(x) + response` is the full training text.
TEMPLATES: dict[str, str] = {
    "alpaca": (
        "Below is an instruction that describes a task. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n{instruction}\n\n### Response:\n"
    ),
    # Alpaca without the preamble: same markers, far fewer tokens for tiny CPU models.
    "alpaca_short": "### Instruction:\n{instruction}\n\n### Response:\n",
}

TEMPLATE_NAMES: tuple[str, ...] = tuple(TEMPLATES)


def get_template(template: str) -> str:
    """Return the template text registered under `template`."""
    try:
        return TEMPLATES[template]
    except KeyError:
        raise DataError(
            f"Unknown template {template!r}; valid templates: {', '.join(TEMPLATE_NAMES)}"
        ) from None


def format_prompt(instruction: str, template: str = "alpaca") -> str:
    """Render `instruction` into the prompt that precedes the response."""
    return get_template(template).format(instruction=instruction)
