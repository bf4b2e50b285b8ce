defmodule Quiver.Index do
  @moduledoc """
  Search over an index built by `quiver index` (or `quiver watch`, `quiver mcp`), as
  `quiver search` searches it.
  """

  @search_options [:k, :mode, :languages, :path, :model]

  @doc """
  The best chunks for `query` in the index at `path` (the `.quiver` folder).

  Options:
    * `:k` - how many hits (default 10)
    * `:mode` - `:hybrid` (default), `:vector` or `:keyword`
    * `:languages` - only these languages (e.g. `["python", "rust"]`)
    * `:path` - only paths matching this glob (e.g. `"src/**"`)
    * `:model` - the index's model, from `Quiver.load_model/2`; by default the model the index
      records is loaded on the first search and kept

  Each hit is a map with `:score`, `:chunk_id`, `:path`, `:language`, `:symbol`, `:kind`,
  `:start_line`, `:end_line`, `:text`, `:vector_rank` and `:keyword_rank`.
  """
  @spec search(String.t(), String.t(), keyword()) :: {:ok, [map()]} | {:error, String.t()}
  def search(path, query, opts \\ []) do
    with :ok <-
           Quiver.check(is_binary(path) and String.valid?(path), "the index path must be a string"),
         :ok <-
           Quiver.check(
             is_binary(query) and String.valid?(query),
             "the query must be a UTF-8 string"
           ),
         {:ok, opts} <- Quiver.options(opts, @search_options),
         {:ok, k} <- Quiver.positive_or_nil(opts, :k),
         {:ok, mode} <- mode(Keyword.get(opts, :mode, :hybrid)),
         {:ok, languages} <- languages(Keyword.get(opts, :languages, [])),
         {:ok, glob} <- Quiver.string_or_nil(opts, :path),
         {:ok, model} <- model(Keyword.get(opts, :model)) do
      options = %{k: k || 10, mode: mode, languages: languages, path: glob, model: model}

      Quiver.call(
        fn -> Quiver.Native.search_index(path, query, options) end,
        "is the model a handle from Quiver.load_model/2?"
      )
    end
  end

  defp mode(mode) when mode in [:hybrid, :vector, :keyword], do: {:ok, Atom.to_string(mode)}
  defp mode(mode), do: {:error, "mode: #{inspect(mode)} is not :hybrid, :vector or :keyword"}

  defp languages(names) when is_list(names) do
    if Enum.all?(names, &(is_binary(&1) and String.valid?(&1))),
      do: {:ok, names},
      else: {:error, "languages must be a list of strings"}
  end

  defp languages(other), do: {:error, "languages must be a list of strings, not #{inspect(other)}"}

  defp model(nil), do: {:ok, nil}
  defp model(model) when is_reference(model), do: {:ok, model}

  defp model(other),
    do: {:error, "model: #{inspect(other)} is not a model from Quiver.load_model/2"}
end
