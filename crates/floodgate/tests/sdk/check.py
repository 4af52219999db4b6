"""Drive a running Floodgate with the official OpenAI and Anthropic Python SDKs.

Every model alias is reached from both SDKs, whatever format its upstream
speaks: `gpt` (an OpenAI-format upstream), `claude` (Anthropic) and `gemini`
(Gemini). The SDKs do their own parsing and validation of every response and
stream event, so a shape they reject fails here.

    python check.py BASE_URL API_KEY          # every alias, every shape
    python check.py BASE_URL API_KEY cache    # cached answers replayed (the gateway's cache on)
"""

import json
import sys

import anthropic
import openai

BASE, KEY = sys.argv[1], sys.argv[2]
MODELS = ["gpt", "claude", "gemini"]
WEATHER = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
checks = 0


def check(condition, what):
    global checks
    if not condition:
        raise AssertionError(what)
    checks += 1


def openai_sdk():
    client = openai.OpenAI(base_url=BASE + "/v1", api_key=KEY, max_retries=0)
    ids = [m.id for m in client.models.list()]
    check(ids[:3] == MODELS, f"models.list: {ids}")
    for model in MODELS:
        reply = client.chat.completions.create(
            model=model,
            messages=[{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hello"}],
        )
        check(reply.choices[0].message.content.startswith("mock"), f"{model}: {reply}")
        check(reply.choices[0].finish_reason == "stop", f"{model}: finish {reply.choices[0].finish_reason}")
        check(reply.usage.completion_tokens == 20, f"{model}: usage {reply.usage}")

        text, usage = "", None
        stream = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Hello"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
            if chunk.usage:
                usage = chunk.usage
        check(text.startswith("mock") and len(text.split()) == 20, f"{model} stream text: {text!r}")
        check(usage is not None and usage.completion_tokens == 20, f"{model} stream usage: {usage}")

        # A tool round trip.
        messages = [{"role": "user", "content": "Weather in Paris?"}]
        tools = [{"type": "function", "function": WEATHER}]
        reply = client.chat.completions.create(model=model, messages=messages, tools=tools)
        call = reply.choices[0].message.tool_calls[0]
        check(call.function.name == "get_weather", f"{model}: tool call {call}")
        check(json.loads(call.function.arguments) == {"mock": True}, f"{model}: arguments {call.function.arguments}")
        messages.append(reply.choices[0].message.model_dump(exclude_none=True))
        messages.append({"role": "tool", "tool_call_id": call.id, "content": "21 C"})
        reply = client.chat.completions.create(model=model, messages=messages, tools=tools)
        check(reply.choices[0].message.content.startswith("mock"), f"{model}: after tool {reply}")

        # A streamed tool call, assembled by the SDK's own helper.
        with client.chat.completions.stream(model=model, messages=messages[:1], tools=tools) as stream:
            final = stream.get_final_completion()
        streamed_call = final.choices[0].message.tool_calls[0]
        check(json.loads(streamed_call.function.arguments) == {"mock": True}, f"{model}: streamed tool call {streamed_call}")

    vectors = client.embeddings.create(model="embed", input=["a", "b"])
    check(len(vectors.data) == 2 and len(vectors.data[0].embedding) > 0, "embeddings")

    try:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
        check(False, "unknown model accepted")
    except openai.NotFoundError as e:
        check("GET /v1/models" in str(e), f"404 message: {e}")
    try:
        openai.OpenAI(base_url=BASE + "/v1", api_key="wrong", max_retries=0).models.list()
        check(False, "wrong key accepted")
    except openai.AuthenticationError:
        check(True, "")


def anthropic_sdk():
    client = anthropic.Anthropic(base_url=BASE, api_key=KEY, max_retries=0)
    for model in MODELS:
        message = client.messages.create(
            model=model, max_tokens=256, system="Be terse.", messages=[{"role": "user", "content": "Hello"}]
        )
        check(message.content[0].text.startswith("mock"), f"{model}: {message}")
        check(message.stop_reason == "end_turn", f"{model}: stop {message.stop_reason}")
        check(message.usage.output_tokens == 20, f"{model}: usage {message.usage}")

        # The SDK's stream helper checks event order and accumulates the message.
        with client.messages.stream(
            model=model, max_tokens=256, messages=[{"role": "user", "content": "Hello"}]
        ) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        check(len(text.split()) == 20, f"{model} stream text: {text!r}")
        check(final.stop_reason == "end_turn" and final.usage.output_tokens == 20, f"{model} final: {final}")

        tool = {"name": WEATHER["name"], "description": WEATHER["description"], "input_schema": WEATHER["parameters"]}
        messages = [{"role": "user", "content": "Weather in Paris?"}]
        reply = client.messages.create(model=model, max_tokens=256, tools=[tool], messages=messages)
        use = next(b for b in reply.content if b.type == "tool_use")
        check(reply.stop_reason == "tool_use" and use.input == {"mock": True}, f"{model}: tool use {reply}")
        messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in reply.content]})
        messages.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "21 C"}]})
        reply = client.messages.create(model=model, max_tokens=256, tools=[tool], messages=messages)
        check(reply.content[0].text.startswith("mock"), f"{model}: after tool {reply}")

        with client.messages.stream(model=model, max_tokens=256, tools=[tool], messages=messages[:1]) as stream:
            final = stream.get_final_message()
        streamed = next(b for b in final.content if b.type == "tool_use")
        check(streamed.input == {"mock": True}, f"{model}: streamed tool use {final}")

    try:
        client.messages.create(model="nope", max_tokens=8, messages=[{"role": "user", "content": "x"}])
        check(False, "unknown model accepted")
    except anthropic.NotFoundError as e:
        check(e.body["error"]["type"] == "not_found_error", f"404 body: {e.body}")


def cached():
    """A cached answer, replayed to each SDK as a stream and as a whole, reads
    as the live one did."""
    oc = openai.OpenAI(base_url=BASE + "/v1", api_key=KEY, max_retries=0)
    for model in MODELS:
        messages = [{"role": "user", "content": f"Cache me ({model})"}]

        def streamed():
            text, usage = "", None
            stream = oc.chat.completions.create(
                model=model, messages=messages, temperature=0, stream=True,
                stream_options={"include_usage": True},
            )
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    text += chunk.choices[0].delta.content
                if chunk.usage:
                    usage = (chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
            return text, usage

        live, replayed = streamed(), streamed()
        check(live[0] and live == replayed, f"{model}: replayed stream {replayed} != live {live}")
        raw = oc.chat.completions.with_raw_response.create(model=model, messages=messages, temperature=0)
        check(raw.headers.get("x-floodgate-cache") == "hit", f"{model}: {dict(raw.headers)}")
        check(raw.parse().choices[0].message.content == live[0], f"{model}: whole answer")

    ac = anthropic.Anthropic(base_url=BASE, api_key=KEY, max_retries=0)
    tool = {"name": WEATHER["name"], "description": WEATHER["description"], "input_schema": WEATHER["parameters"]}
    for model in MODELS:
        messages = [{"role": "user", "content": f"Cache me too ({model})"}]

        def streamed(**extra):
            # This SDK's stream() has no temperature argument: it goes in the body.
            with ac.messages.stream(
                model=model, max_tokens=256, messages=messages, extra_body={"temperature": 0}, **extra
            ) as stream:
                text = "".join(stream.text_stream)
                final = stream.get_final_message()
            blocks = [b.model_dump(exclude_none=True) for b in final.content]
            return text, blocks, final.stop_reason, final.usage.output_tokens

        live, replayed = streamed(), streamed()
        check(live[0] and live == replayed, f"{model}: replayed stream {replayed} != live {live}")
        live, replayed = streamed(tools=[tool]), streamed(tools=[tool])
        check(live[2] == "tool_use" and live == replayed, f"{model}: replayed tool use {replayed} != {live}")
        raw = ac.messages.with_raw_response.create(
            model=model, max_tokens=256, messages=messages, extra_body={"temperature": 0}
        )
        check(raw.headers.get("x-floodgate-cache") == "hit", f"{model}: {dict(raw.headers)}")


if sys.argv[3:] == ["cache"]:
    cached()
else:
    openai_sdk()
    anthropic_sdk()
print(f"sdk checks passed: {checks} (openai {openai.__version__}, anthropic {anthropic.__version__})")
