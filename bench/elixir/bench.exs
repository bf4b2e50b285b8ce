# Elixir's embed_batch against the `quiver embed` CLI and against `quiver serve` over HTTP, on
# the same texts (pieces of this repository's Rust sources), in one run. Run by bench/elixir/run.
[model, cli, count] = System.argv()
count = String.to_integer(count)
root = Path.expand("../..", __DIR__)

texts =
  Path.wildcard(Path.join(root, "crates/*/src/**/*.rs"))
  |> Enum.sort()
  |> Enum.flat_map(fn file -> file |> File.read!() |> String.split("\n") |> Enum.chunk_every(8) end)
  |> Enum.map(&Enum.join(&1, "\n"))
  |> Enum.reject(&(String.trim(&1) == ""))
  |> Enum.take(count)

count = length(texts)

seconds = fn work ->
  started = System.monotonic_time(:microsecond)
  result = work.()
  {(System.monotonic_time(:microsecond) - started) / 1.0e6, result}
end

# 1. Elixir: one embed_batch call (the model loaded beforehand, as an application would).
{:ok, handle} = Quiver.load_model(model)
{:ok, _} = Quiver.embed_batch(handle, Enum.take(texts, 8))
{nif_s, {:ok, vectors}} = seconds.(fn -> Quiver.embed_batch(handle, texts) end)
^count = length(vectors)

# 2. The CLI on the same texts: its own --stats time the embedding alone (no model load).
dir = Path.join(System.tmp_dir!(), "quiver-bench-elixir")
File.mkdir_p!(dir)
input = Path.join(dir, "texts.jsonl")

escape = fn text ->
  text
  |> String.replace("\\", "\\\\")
  |> String.replace("\"", "\\\"")
  |> String.replace("\n", "\\n")
  |> String.replace("\t", "\\t")
  |> String.replace(~r/[\x00-\x1f]/, fn <<c>> -> "\\u00" <> Base.encode16(<<c>>) end)
end

File.write!(input, Enum.map_join(texts, "", &("{\"text\": \"" <> escape.(&1) <> "\"}\n")))

{cli_output, 0} =
  System.cmd(
    cli,
    ["embed", input, "--model", model, "--stats", "--output", Path.join(dir, "out.jsonl")],
    stderr_to_stdout: true
  )

[_, cli_s] = Regex.run(~r/"seconds":([0-9.e+-]+)/, cli_output)
cli_s = String.to_float(cli_s)

# 3. `quiver serve` over HTTP from Elixir (:httpc), 32 texts per request, 4 requests in flight.
port = 18_000 + :rand.uniform(1000)

server =
  Port.open({:spawn_executable, cli}, [
    :binary,
    :stderr_to_stdout,
    args: ["serve", "--model", model, "--port", Integer.to_string(port)]
  ])

:inets.start()
url = ~c"http://127.0.0.1:#{port}/embed"

post = fn batch ->
  body =
    "{\"inputs\": [" <>
      Enum.map_join(batch, ",", &("\"" <> escape.(&1) <> "\"")) <> "], \"truncate\": true}"

  {:ok, {{_, 200, _}, _, _}} = :httpc.request(:post, {url, [], ~c"application/json", body}, [], [])
end

Enum.find_value(1..300, fn _ ->
  Process.sleep(100)

  case :httpc.request(:get, {~c"http://127.0.0.1:#{port}/health", []}, [], []) do
    {:ok, {{_, 200, _}, _, _}} -> true
    _ -> nil
  end
end) || raise "quiver serve did not start"

post.(Enum.take(texts, 8))

{http_s, _} =
  seconds.(fn ->
    texts
    |> Enum.chunk_every(32)
    |> Task.async_stream(post, max_concurrency: 4, timeout: :infinity)
    |> Stream.run()
  end)

# Closing a port does not stop the program behind it.
{:os_pid, server_pid} = Port.info(server, :os_pid)
System.cmd("kill", [Integer.to_string(server_pid)])

IO.puts("""
#{count} texts (8-line pieces of crates/*/src), model #{Path.basename(model)}, one run:
  Elixir Quiver.embed_batch   #{Float.round(nif_s, 2)} s  #{Float.round(count / nif_s, 1)} texts/s
  quiver embed (CLI, --stats)  #{Float.round(cli_s, 2)} s  #{Float.round(count / cli_s, 1)} texts/s
  quiver serve over HTTP       #{Float.round(http_s, 2)} s  #{Float.round(count / http_s, 1)} texts/s  (32 texts a request, 4 in flight)
  NIF overhead vs CLI: #{Float.round((nif_s / cli_s - 1) * 100, 1)} %; HTTP vs NIF: #{Float.round(http_s / nif_s, 2)}x the time
""")
