defmodule Quiver.Native do
  @moduledoc false
  # The NIF (crates/quiver-nif). Every function returns {:ok, value} or {:error, reason};
  # the `Quiver` modules check arguments before calling.

  @on_load :load_nif

  def load_nif do
    path = :filename.join(:code.priv_dir(:quiver), ~c"native/libquiver_nif")
    :erlang.load_nif(path, 0)
  end

  def load_model(_spec, _options), do: :erlang.nif_error(:nif_not_loaded)
  def embed_batch(_model, _texts, _options), do: :erlang.nif_error(:nif_not_loaded)
  def search_index(_index, _query, _options), do: :erlang.nif_error(:nif_not_loaded)
end
