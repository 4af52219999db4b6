-- wrk script: a small non-streaming OpenAI chat completion with a bearer key.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_KEY") or "bench-key")
wrk.body = '{"model":"' .. (os.getenv("BENCH_MODEL") or "gpt-4o-mini") .. '","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello in five words."}]}'

