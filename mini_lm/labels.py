"""The label value every loss skips: prompt, template and padding positions carry it.

    labels = [IGNORE_INDEX] * len(prompt_ids) + answer_ids    # supervise the answer only

-100 is what ``torch.nn.functional.cross_entropy`` ignores by default and what every HF model's
loss (and DataCollatorWithFlattening) uses, so it is written here once and imported everywhere.
"""

IGNORE_INDEX = -100
