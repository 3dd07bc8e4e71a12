// The `thinwire` executable; subcommands arrive with the trainer.
int main() { return 0; }
