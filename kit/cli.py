"""The `kit` command line."""
import click


@click.group()
def main() -> None:
    """Strangler-fig migration kit."""


if __name__ == "__main__":
    main()
