"""Prompt templates: the training text, the generation prompt, and where the response starts."""

from __future__ import annotations

from dataclasses import dataclass

from fedrouter.data.errors import DataError

# How the generation prompt ends: "marker" stops right after the response marker, so the
# model writes the space and the first word as one token, as it saw them in training;
# "exact" is the reference's prompt byte for byte, marker and trailing space.
GENERATION_PROMPTS: tuple[str, ...] = ("marker", "exact")


@dataclass(frozen=True)
class Template:
    """A template: `prompt` holds one `{instruction}` field; the response follows it."""

    prompt: str
    marker: str  # the response marker; the loss covers every token after it

    def training_text(self, instruction: str, response: str, eos: str) -> str:
        """Return the full training text: prompt, response, end-of-sequence token."""
        return self.prompt.format(instruction=instruction) + response + eos


# The reference's alpaca template (its utils/template.py), byte for byte: a space after the
# instruction, and the response on the marker's line after one space.
TEMPLATES: dict[str, Template] = {
    "alpaca": Template(
        prompt=(
            "Below is an instruction that describes a task. "
            "Write a response that appropriately completes the request.\n\n"
            "### Instruction:\n{instruction} \n\n### Response: "
        ),
        marker="### Response:",
    ),
    # Alpaca without the preamble: same markers, far fewer tokens for tiny CPU models.
    "alpaca_short": Template(
        prompt="### Instruction:\n{instruction} \n\n### Response: ",
        marker="### Response:",
    ),
}

TEMPLATE_NAMES: tuple[str, ...] = tuple(TEMPLATES)


def get_template(template: str) -> Template:
    """Return the template registered under `template`."""
    try:
        return TEMPLATES[template]
    except KeyError:
        raise DataError(
            f"Unknown template {template!r}; valid templates: {', '.join(TEMPLATE_NAMES)}"
        ) from None


def format_prompt(instruction: str, template: str = "alpaca") -> str:
    """Render the training prompt: `format_prompt(x) + response + eos` is the training text."""
    return get_template(template).prompt.format(instruction=instruction)


def prompt_through_marker(instruction: str, template: str = "alpaca") -> str:
    """Render the prompt up to the end of its last response marker (loss starts after it)."""
    prompt = format_prompt(instruction, template)
    marker = get_template(template).marker
    return prompt[: prompt.rindex(marker) + len(marker)]


def generation_prompt(instruction: str, template: str = "alpaca", end: str = "marker") -> str:
    """Render the prompt a model continues at evaluation (see GENERATION_PROMPTS)."""
    if end == "exact":
        return format_prompt(instruction, template)
    if end == "marker":
        return prompt_through_marker(instruction, template)
    raise DataError(f"Unknown generation prompt {end!r}; valid: {', '.join(GENERATION_PROMPTS)}")


def extract_response(prompt: str, generated: str, template: str = "alpaca") -> str:
    """Return the answer: the text after the last response marker of prompt + generation.

    The reference splits the decoded prompt and generation at its last "### Response: "
    (marker and space); where the model wrote no space after the marker, the marker alone
    is the split point.
    """
    marker = get_template(template).marker
    start = prompt.rfind(marker)  # the prompt's own marker: an earlier one is the input's
    if start < 0:
        return generated
    tail = prompt[start:] + generated
    key = marker + " " if marker + " " in tail else marker
    return tail.rsplit(key, 1)[1]
