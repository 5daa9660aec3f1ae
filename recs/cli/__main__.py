"""`python -m recs.cli ...`"""

from recs.cli import main

main()
