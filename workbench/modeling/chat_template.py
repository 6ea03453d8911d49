"""Chat templates: the builtin LFM2-style template and resolution of a recipe's `chat_template` spec."""

from pathlib import Path

# LFM2's ChatML-like format. Tools are written into the system turn between the tool-list tokens, tool results
# are wrapped in the tool-response tokens. Each assistant reply *and* its closing `<|im_end|>` sit inside
# `{% generation %}`, so `return_assistant_tokens_mask=True` (trl's `assistant_only_loss`) trains the model to
# stop; the newline after `<|im_end|>` stays outside, as at inference the model stops on `<|im_end|>`.
LFM2_CHAT_TEMPLATE = r"""{{- bos_token -}}
{%- set ns = namespace(system="") -%}
{%- if messages and messages[0]["role"] == "system" -%}
  {%- set ns.system = messages[0]["content"] -%}
  {%- set messages = messages[1:] -%}
{%- endif -%}
{%- if tools -%}
  {%- set ns.system = ns.system + ("\n" if ns.system else "") + "List of tools: <|tool_list_start|>[" -%}
  {%- for tool in tools -%}
    {%- set ns.system = ns.system + (tool if tool is string else tool | tojson) + ("" if loop.last else ", ") -%}
  {%- endfor -%}
  {%- set ns.system = ns.system + "]<|tool_list_end|>" -%}
{%- endif -%}
{%- if ns.system -%}
  {{- "<|im_start|>system\n" + ns.system + "<|im_end|>\n" -}}
{%- endif -%}
{%- for message in messages -%}
  {%- set content = message["content"] if message["content"] is string else message["content"] | tojson -%}
  {{- "<|im_start|>" + message["role"] + "\n" -}}
  {%- if message["role"] == "assistant" -%}
    {%- generation -%}
      {{- content + "<|im_end|>" -}}
    {%- endgeneration -%}
    {{- "\n" -}}
  {%- elif message["role"] == "tool" -%}
    {{- "<|tool_response_start|>" + content + "<|tool_response_end|><|im_end|>\n" -}}
  {%- else -%}
    {{- content + "<|im_end|>\n" -}}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- "<|im_start|>assistant\n" -}}
{%- endif -%}
"""

BUILTIN_CHAT_TEMPLATES = {"lfm2": LFM2_CHAT_TEMPLATE}


def resolve_chat_template(spec: str, base_dir: Path) -> str:
    """Return the template text for `spec`: a builtin name, or a `.jinja` file path relative to `base_dir`."""
    if spec in BUILTIN_CHAT_TEMPLATES:
        return BUILTIN_CHAT_TEMPLATES[spec]
    if not spec.endswith(".jinja"):
        builtins = ", ".join(sorted(BUILTIN_CHAT_TEMPLATES))
        raise ValueError(f"unknown chat template {spec!r}: use a builtin ({builtins}) or a path to a .jinja file")
    path = base_dir / spec
    if not path.is_file():
        raise ValueError(f"chat template file not found: {path}")
    return path.read_text(encoding="utf-8")
