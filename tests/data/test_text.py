from raypipe.data.text import render, upsr_prompt

ITEM = {"title": "Coastal Azure Mug", "category": "Drinkware", "brand": "Hearthly", "price": 12.5,
        "description": "A tidal mug.", "image": b"png"}


def test_templates_exact() -> None:
    assert render("plain", ITEM) == "Coastal Azure Mug"
    assert render("plain", {"title": None, "category": "Drinkware"}) == "Drinkware"
    assert render("upsr_pretrain", ITEM) == "(category: Drinkware) Coastal Azure Mug"
    assert render("upsr_finetune", ITEM) == (
        "(category: Drinkware) Coastal Azure Mug (brand: Hearthly) (price: 12.50) (description: A tidal mug.)")
    assert render("unimp", ITEM) == ("[IMG] title: Coastal Azure Mug category: Drinkware brand: Hearthly "
                                     "price: 12.50 description: A tidal mug. [EOC]")
    assert render("unimp", {"title": "T"}) == "title: T [EOC]"


def test_token_budget_and_prompt() -> None:
    assert render("upsr_finetune", ITEM, max_tokens=4) == "(category: Drinkware) Coastal Azure"
    assert upsr_prompt(["a", "b"]) == (
        "Given the following purchase history of user: a, b, <masked_item>, predict masked item purchased by the user?")


def test_unknown_template() -> None:
    import pytest

    with pytest.raises(ValueError, match="unknown text template"):
        render("nope", ITEM)


def test_upsr_attribute_orders_of_section_4_5() -> None:
    import pytest

    dpt = "(brand: Hearthly) (price: 12.50) (description: A tidal mug.)"
    assert render("upsr:T", ITEM) == "Coastal Azure Mug"
    assert render("upsr:CT", ITEM) == render("upsr_pretrain", ITEM)
    assert render("upsr:CTD", ITEM) == render("upsr_finetune", ITEM)
    assert render("upsr:TCD", ITEM) == f"Coastal Azure Mug (category: Drinkware) {dpt}"
    assert render("upsr:DCT", ITEM) == f"{dpt} (category: Drinkware) Coastal Azure Mug"
    assert render("upsr:DCT", {"title": "T", "price": float("nan")}) == "T"  # missing values are skipped
    assert render("upsr:TCD", ITEM, max_tokens=3) == "Coastal Azure Mug"
    for bad in ("upsr:", "upsr:CTT", "upsr:X"):
        with pytest.raises(ValueError, match="attribute order"):
            render(bad, ITEM)
