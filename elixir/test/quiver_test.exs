defmodule QuiverTest do
  # The NIF against the real all-MiniLM-L6-v2 weights (scripts/fetch-test-models) and the
  # `quiver` CLI built by cargo: vectors, concurrency, errors, search.
  use ExUnit.Case, async: false

  @model System.get_env("QUIVER_TEST_MODEL", Path.expand("../../models/all-MiniLM-L6-v2", __DIR__))
  @cli System.get_env("QUIVER_BIN", Path.expand("../../target/debug/quiver", __DIR__))

  @texts [
    "Retries a failed network request with exponential backoff.",
    "def parse_settings(text): return toml.loads(text)",
    "fn main() { println!(\"hello\"); }",
    "Download the archive, unpack it and put the binary on your PATH.",
    "Ünïcödé and emoji 🚀 in a docstring",
    ""
  ]

  setup_all do
    {:ok, model} = Quiver.load_model(@model)
    %{model: model}
  end

  defp scratch(name) do
    dir =
      Path.join(System.tmp_dir!(), "quiver-elixir-#{name}-#{System.unique_integer([:positive])}")

    File.rm_rf!(dir)
    File.mkdir_p!(dir)
    dir
  end

  # `quiver embed --format npy` of `texts`, one vector per text (NumPy format 1.0, little-endian f32).
  defp cli_vectors(texts) do
    dir = scratch("cli")
    input = Path.join(dir, "texts.txt")
    output = Path.join(dir, "vectors.npy")
    File.write!(input, Enum.map_join(texts, "", &(&1 <> "\n")))

    {_, 0} =
      System.cmd(@cli, ["embed", input, "--model", @model, "--format", "npy", "--output", output])

    <<0x93, "NUMPY", 1, 0, header_length::little-16, rest::binary>> = File.read!(output)
    <<header::binary-size(header_length), data::binary>> = rest
    [_, rows, columns] = Regex.run(~r/'shape': \((\d+), (\d+)\)/, header)
    {rows, columns} = {String.to_integer(rows), String.to_integer(columns)}

    vectors =
      for <<row::binary-size(columns * 4) <- data>>, do: for(<<x::little-float-32 <- row>>, do: x)

    assert length(vectors) == rows
    vectors
  end

  defp cosine(a, b) do
    dot = Enum.zip_reduce(a, b, 0.0, fn x, y, acc -> acc + x * y end)
    norm = fn v -> :math.sqrt(Enum.reduce(v, 0.0, &(&1 * &1 + &2))) end
    dot / (norm.(a) * norm.(b))
  end

  test "vectors equal quiver embed's", %{model: model} do
    # The CLI reads one text per line: the empty text is left out there.
    texts = Enum.reject(@texts, &(&1 == ""))
    {:ok, ours} = Quiver.embed_batch(model, texts)
    theirs = cli_vectors(texts)
    assert length(ours) == length(theirs)

    for {a, b} <- Enum.zip(ours, theirs) do
      assert length(a) == 384
      assert cosine(a, b) >= 0.9999
    end

    {:ok, one} = Quiver.embed(model, hd(texts))
    assert cosine(one, hd(ours)) >= 0.9999
  end

  test "binaries of little-endian f32 hold the same vectors", %{model: model} do
    {:ok, lists} = Quiver.embed_batch(model, @texts)
    {:ok, binaries} = Quiver.embed_batch(model, @texts, format: :binary)

    for {list, binary} <- Enum.zip(lists, binaries) do
      assert byte_size(binary) == 384 * 4
      decoded = for <<x::little-float-32 <- binary>>, do: x
      assert cosine(decoded, list) >= 0.9999
    end
  end

  test "options: prompt, dimensions, normalisation, number format", %{model: model} do
    text = hd(@texts)
    {:ok, full} = Quiver.embed(model, text)
    {:ok, cut} = Quiver.embed(model, text, dimensions: 128)
    assert length(cut) == 128
    assert_in_delta :math.sqrt(Enum.reduce(cut, 0.0, &(&1 * &1 + &2))), 1.0, 1.0e-5
    {:ok, prompted} = Quiver.embed(model, text, prompt: "query: ")
    assert cosine(prompted, full) < 0.9999
    {:ok, raw} = Quiver.embed(model, text, normalize: false)
    refute_in_delta :math.sqrt(Enum.reduce(raw, 0.0, &(&1 * &1 + &2))), 1.0, 1.0e-3

    {:ok, f32} = Quiver.load_model(@model, quantize: :none)
    {:ok, exact} = Quiver.embed(f32, text)
    {:ok, int8} = Quiver.load_model(@model, quantize: :int8)
    {:ok, quantized} = Quiver.embed(int8, text)
    assert cosine(quantized, exact) > 0.98
    {:ok, bf16} = Quiver.load_model(@model, quantize: :bf16)
    {:ok, rounded} = Quiver.embed(bf16, text)
    assert cosine(rounded, exact) > 0.999
    assert rounded != exact
    # The default is one of the two formats that keep retrieval scores.
    assert full == exact or full == rounded
  end

  test "100 processes embedding at once all get their own vectors; the schedulers stay responsive",
       %{model: model} do
    texts = for i <- 1..100, do: "request #{i}: #{Enum.at(@texts, rem(i, 5))}"
    {:ok, expected} = Quiver.embed_batch(model, texts)
    parent = self()

    ticker =
      spawn_link(fn ->
        tick = fn tick, last, worst ->
          receive do
            :stop -> send(parent, {:worst_gap, worst})
          after
            5 ->
              now = System.monotonic_time(:millisecond)
              tick.(tick, now, max(worst, now - last))
          end
        end

        tick.(tick, System.monotonic_time(:millisecond), 0)
      end)

    results =
      texts
      |> Task.async_stream(&Quiver.embed(model, &1), max_concurrency: 100, timeout: 120_000)
      |> Enum.map(fn {:ok, {:ok, vector}} -> vector end)

    send(ticker, :stop)
    assert_receive {:worst_gap, worst}, 5_000

    for {got, want} <- Enum.zip(results, expected) do
      assert cosine(got, want) >= 0.9999
    end

    # A timer asking for 5 ms never waited long: the model ran off the normal schedulers.
    assert worst < 250, "a normal scheduler was held for #{worst} ms"
  end

  test "bad input is an error tuple, never a crash", %{model: model} do
    assert {:error, "text 1 is not valid UTF-8"} = Quiver.embed_batch(model, ["ok", <<0xFF, 0xFE>>])
    assert {:error, "texts must be a list" <> _} = Quiver.embed_batch(model, "a string")
    assert {:error, "text 0 is not a string" <> _} = Quiver.embed_batch(model, [42])
    assert {:error, "not a model" <> _} = Quiver.embed(:model, "x")
    assert {:error, "bad argument" <> _} = Quiver.embed(make_ref(), "x")
    assert {:error, "unknown option :colour" <> _} = Quiver.embed(model, "x", colour: :red)
    assert {:error, "dimensions: -1" <> _} = Quiver.embed(model, "x", dimensions: -1)
    assert {:error, message} = Quiver.embed(model, "x", dimensions: 1000)
    assert message =~ "384"
    assert {:error, message} = Quiver.embed(model, "x", prompt_name: "nonexistent")
    assert message =~ "nonexistent"
    long = String.duplicate("word ", 2000)
    assert {:error, message} = Quiver.embed(model, long, truncate: false)
    assert message =~ "longer than"
    assert {:ok, _} = Quiver.embed(model, long)

    missing = Path.join(System.tmp_dir!(), "no-such-model-folder")
    assert {:error, message} = Quiver.load_model(missing)
    assert message =~ "no-such-model-folder"
    assert {:error, _} = Quiver.load_model(42)
    assert {:error, "quantize: :int4" <> _} = Quiver.load_model(@model, quantize: :int4)
    # Still serving after all of that.
    assert {:ok, [_]} = Quiver.embed_batch(model, ["still here"])
  end

  test "Quiver.Index.search answers as quiver search does", %{model: model} do
    root = scratch("index")
    File.mkdir_p!(Path.join(root, "src"))

    File.write!(Path.join(root, "src/net.py"), """
    def retry_with_backoff(request, attempts):
        \"\"\"Retry a failed network request, waiting longer after each failure.\"\"\"
        for attempt in range(attempts):
            if request():
                return True
            time.sleep(2 ** attempt)
        return False
    """)

    File.write!(Path.join(root, "src/config.rs"), """
    /// Parses a TOML configuration file into settings.
    pub fn parse_settings(text: &str) -> Settings {
        toml::from_str(text).unwrap_or_default()
    }
    """)

    {_, 0} = System.cmd(@cli, ["index", root, "--model", @model], stderr_to_stdout: true)
    index = Path.join(root, ".quiver")
    query = "retry a request that failed"
    {cli, 0} = System.cmd(@cli, ["search", query, "--index", index, "--mode", "vector", "-k", "1"])

    for opts <- [[model: model], []] do
      {:ok, [top | _] = hits} = Quiver.Index.search(index, query, [mode: :vector] ++ opts)
      assert top.path == "src/net.py"
      assert top.symbol == "retry_with_backoff"
      assert cli =~ top.path
      assert Enum.all?(hits, &is_float(&1.score))
    end

    {:ok, [top | _]} = Quiver.Index.search(index, "parse_settings toml", mode: :keyword, k: 3)
    assert top.path == "src/config.rs"
    assert {:ok, []} = Quiver.Index.search(index, query, languages: ["go"])
    {:ok, hits} = Quiver.Index.search(index, "settings", path: "src/*.rs")
    assert Enum.all?(hits, &(&1.path == "src/config.rs"))
    assert {:error, "mode: :fuzzy" <> _} = Quiver.Index.search(index, query, mode: :fuzzy)
    assert {:error, message} = Quiver.Index.search(Path.join(root, "nowhere"), query)
    assert message =~ "no index"
  end
end
