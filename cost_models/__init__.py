"""Cost models: hardware specs as data, the roofline model, and the one ILP helper.

Nothing here mutates IR; passes ask these modules what a choice would cost.
"""
