"""One module per subcommand; `cathodeml.cli` registers them."""
