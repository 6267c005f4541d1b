"""Config layer: resolution of defaults and the validation rules for composed configs."""
