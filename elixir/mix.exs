# Defined here, not under lib/: a compiler must exist before Mix compiles lib/.
defmodule Mix.Tasks.Compile.QuiverNif do
  @moduledoc """
  Builds the NIF (`crates/quiver-nif`) with cargo and copies it to `priv/native/`, where
  `Quiver.Native` loads it from.

  The cargo profile is `release` when `MIX_ENV=prod` or `QUIVER_NIF_PROFILE=release`, else
  `dev` (which reuses what `cargo test` built). Cargo rebuilds only what changed, so a second
  `mix compile` costs about a second.
  """
  use Mix.Task.Compiler

  @impl true
  def run(_args) do
    root = Path.expand("..", __DIR__)

    profile =
      System.get_env("QUIVER_NIF_PROFILE") || if Mix.env() == :prod, do: "release", else: "dev"

    target_dir = System.get_env("CARGO_TARGET_DIR") || Path.join(root, "target")
    output_dir = if profile == "dev", do: "debug", else: profile

    {_, status} =
      System.cmd("cargo", ["build", "--quiet", "-p", "quiver-nif", "--profile", profile],
        cd: root,
        into: IO.stream(:stdio, :line),
        stderr_to_stdout: true
      )

    if status != 0 do
      Mix.raise("cargo build -p quiver-nif failed (exit #{status})")
    end

    built = Path.join([target_dir, output_dir, "libquiver_nif.so"])
    destination = Path.join([File.cwd!(), "priv", "native", "libquiver_nif.so"])
    File.mkdir_p!(Path.dirname(destination))

    # Copied to a new name and renamed over the old one: a VM that has the old library loaded
    # keeps its mapping intact.
    partial = destination <> ".partial"
    File.cp!(built, partial)
    File.rename!(partial, destination)
    # Links priv/ into _build now (Mix did it before this ran, when priv/ may not have existed).
    Mix.Project.build_structure()
    {:ok, []}
  end
end

defmodule Quiver.MixProject do
  use Mix.Project

  # Quiver for Elixir: a thin front end over the Rust engine, loaded as a NIF
  # (crates/quiver-nif). `mix compile` builds the NIF with cargo first (Mix.Tasks.Compile.QuiverNif).
  def project do
    [
      app: :quiver,
      version: "0.1.0",
      elixir: "~> 1.14",
      compilers: [:quiver_nif] ++ Mix.compilers(),
      start_permanent: Mix.env() == :prod,
      deps: []
    ]
  end

  def application do
    [extra_applications: [:logger]]
  end
end
