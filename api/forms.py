from __future__ import annotations

from django import forms

from api.models import ApiToken


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, label="Name", help_text="What it is for, e.g. “grading script”.")
    scope = forms.ChoiceField(choices=ApiToken.Scope.choices, initial=ApiToken.Scope.READ,
                              widget=forms.RadioSelect, label="Scope",
                              help_text="Read only lists labs, sessions and verdicts; read and write also starts, "
                                        "stops and extends sessions and runs checks.")
