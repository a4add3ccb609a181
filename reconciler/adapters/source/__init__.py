"""Where the desired state comes from: the inventory folder and the git repository around it."""
