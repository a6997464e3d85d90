"""Machine features (`key:value`) and how an index entry's features are matched against them."""
