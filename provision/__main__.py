import sys

from provision.cli import main

sys.exit(main(sys.argv[1:]))
