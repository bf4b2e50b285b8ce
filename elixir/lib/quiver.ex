defmodule Quiver do
  @moduledoc """
  Quiver's embedding engine inside the BEAM.

      {:ok, model} = Quiver.load_model("sentence-transformers/all-MiniLM-L6-v2")
      {:ok, vector} = Quiver.embed(model, "parse a TOML file")
      {:ok, vectors} = Quiver.embed_batch(model, ["retry with backoff", "open a socket"])
      {:ok, hits} = Quiver.Index.search("path/to/repo/.quiver", "retry a request", k: 5)

  A model is loaded once per handle; the handle may be shared by any number of processes,
  whose texts the engine merges into token-budgeted batches on its own model thread, as
  `quiver serve` merges HTTP requests. Calls run on dirty schedulers, so the BEAM keeps serving.
  Every function returns `{:ok, value}` or `{:error, reason}` (a readable string); no input
  raises or crashes the VM.
  """

  @typedoc "A loaded model: a NIF resource, safe to share across processes."
  @type model :: reference()
  @type vector :: [float()] | binary()

  @load_options [:quantize, :max_length]
  @embed_options [:prompt_name, :prompt, :dimensions, :normalize, :truncate, :format]

  @doc """
  Loads a model: a folder (sentence-transformers layout) or a Hugging Face hub id (downloaded
  once, then read from the cache).

  Options:
    * `:quantize` - number format of the dense layers: `:none` (f32), `:int8` or `:bf16`
      (default: `:bf16` where the CPU multiplies bf16 natively (AMX, AVX-512 BF16), else `:none`)
    * `:max_length` - truncate inputs at this many tokens (default: the model's own)
  """
  @spec load_model(String.t(), keyword()) :: {:ok, model()} | {:error, String.t()}
  def load_model(name_or_path, opts \\ []) do
    with :ok <- check(is_binary(name_or_path), "the model must be a string (a folder or a hub id)"),
         {:ok, opts} <- options(opts, @load_options),
         {:ok, quantize} <- quantize(Keyword.get(opts, :quantize)),
         {:ok, max_length} <- positive_or_nil(opts, :max_length) do
      call(fn ->
        Quiver.Native.load_model(name_or_path, %{quantize: quantize, max_length: max_length})
      end)
    end
  end

  @doc """
  The vector of one text. Options as `embed_batch/3`.
  """
  @spec embed(model(), String.t(), keyword()) :: {:ok, vector()} | {:error, String.t()}
  def embed(model, text, opts \\ []) do
    with {:ok, [vector]} <- embed_batch(model, [text], opts), do: {:ok, vector}
  end

  @doc """
  The vectors of a list of texts, in order.

  Options:
    * `:prompt_name` - a prompt the model defines (`"query"`, `"document"`, ...)
    * `:prompt` - a literal prompt prepended to every text (instead of `:prompt_name`)
    * `:dimensions` - Matryoshka: keep this many leading dimensions, then normalise
    * `:normalize` - `true` or `false` to force unit length on or off (default: the model's)
    * `:truncate` - cut over-long texts at the model's length (default `true`); `false`
      returns an error naming the text instead
    * `:format` - `:list` (lists of floats, default) or `:binary` (each vector a binary of
      little-endian f32, e.g. for `Nx.from_binary(b, :f32)`)
  """
  @spec embed_batch(model(), [String.t()], keyword()) :: {:ok, [vector()]} | {:error, String.t()}
  def embed_batch(model, texts, opts \\ []) do
    with :ok <- check(is_reference(model), "not a model: load one with Quiver.load_model/2"),
         :ok <- check_texts(texts),
         {:ok, opts} <- options(opts, @embed_options),
         {:ok, prompt_name} <- string_or_nil(opts, :prompt_name),
         {:ok, prompt} <- string_or_nil(opts, :prompt),
         {:ok, dimensions} <- positive_or_nil(opts, :dimensions),
         {:ok, normalize} <- boolean_or_nil(opts, :normalize),
         {:ok, truncate} <- boolean_or_nil(opts, :truncate),
         {:ok, binary} <- format(Keyword.get(opts, :format, :list)) do
      options = %{
        prompt_name: prompt_name,
        prompt: prompt,
        dimensions: dimensions,
        normalize: normalize,
        truncate: truncate != false,
        binary: binary
      }

      call(
        fn -> Quiver.Native.embed_batch(model, texts, options) end,
        "is the model a handle from Quiver.load_model/2?"
      )
    end
  end

  # -- argument checks: each failure names what was wrong --------------------------------------

  @doc false
  def check(true, _message), do: :ok
  def check(false, message), do: {:error, message}

  defp check_texts(texts) when is_list(texts) do
    texts
    |> Enum.with_index()
    |> Enum.find_value(:ok, fn
      {text, i} when not is_binary(text) -> {:error, "text #{i} is not a string: #{inspect(text)}"}
      {text, i} -> if String.valid?(text), do: nil, else: {:error, "text #{i} is not valid UTF-8"}
    end)
  end

  defp check_texts(other), do: {:error, "texts must be a list of strings, not #{inspect(other)}"}

  @doc false
  def options(opts, known) do
    cond do
      not Keyword.keyword?(opts) ->
        {:error, "options must be a keyword list, not #{inspect(opts)}"}

      (unknown = Keyword.keys(opts) -- known) != [] ->
        {:error, "unknown option #{inspect(hd(unknown))} (known: #{inspect(known)})"}

      true ->
        {:ok, opts}
    end
  end

  defp quantize(nil), do: {:ok, nil}
  defp quantize(q) when q in [:none, :f32, :int8, :bf16], do: {:ok, Atom.to_string(q)}
  defp quantize(q), do: {:error, "quantize: #{inspect(q)} is not :none, :f32, :int8 or :bf16"}

  defp format(:list), do: {:ok, false}
  defp format(:binary), do: {:ok, true}
  defp format(f), do: {:error, "format: #{inspect(f)} is not :list or :binary"}

  @doc false
  def positive_or_nil(opts, key) do
    case Keyword.get(opts, key) do
      nil -> {:ok, nil}
      n when is_integer(n) and n > 0 -> {:ok, n}
      other -> {:error, "#{key}: #{inspect(other)} is not a positive integer"}
    end
  end

  @doc false
  def string_or_nil(opts, key) do
    case Keyword.get(opts, key) do
      nil ->
        {:ok, nil}

      atom when is_atom(atom) and not is_boolean(atom) ->
        {:ok, Atom.to_string(atom)}

      text when is_binary(text) ->
        if String.valid?(text), do: {:ok, text}, else: {:error, "#{key} is not valid UTF-8"}

      other ->
        {:error, "#{key}: #{inspect(other)} is not a string"}
    end
  end

  defp boolean_or_nil(opts, key) do
    case Keyword.get(opts, key) do
      value when is_boolean(value) or is_nil(value) -> {:ok, value}
      other -> {:error, "#{key}: #{inspect(other)} is not true or false"}
    end
  end

  # The NIF answers {:ok, _} or {:error, _}; a term it cannot decode (e.g. a reference that is
  # not a model) raises ArgumentError in the caller, turned into an error here.
  @doc false
  def call(nif, hint \\ "") do
    nif.()
  rescue
    error in ArgumentError ->
      {:error, String.trim("bad argument: #{Exception.message(error)}; #{hint}", "; ")}
  end
end
