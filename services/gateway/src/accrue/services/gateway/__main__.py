"""`python -m accrue.services.gateway`: serve the gateway until SIGTERM."""

from accrue.services.gateway.bootstrap import main

if __name__ == "__main__":
    main()
