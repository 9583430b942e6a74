from __future__ import annotations

from django import forms

from api.models import EXPIRY_DAYS, ApiToken

NEVER = "never"


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, label="Name", help_text="What it is for, e.g. “grading script”.")
    scope = forms.ChoiceField(choices=ApiToken.Scope.choices, initial=ApiToken.Scope.READ,
                              widget=forms.RadioSelect, label="Scope",
                              help_text="Read only lists labs, sessions and verdicts; read and write also starts, "
                                        "stops and extends sessions and runs checks.")
    expires = forms.ChoiceField(
        choices=[*((str(days), f"In {days} days") for days in EXPIRY_DAYS), (NEVER, "Never")],
        initial=str(EXPIRY_DAYS[1]), widget=forms.RadioSelect, label="Expires",
        help_text="An expired token stops working; make a new one then. A token that never expires works until "
                  "you revoke it.")

    def expires_in_days(self) -> int | None:
        """The lifetime chosen, in days; None for a token that never expires (after is_valid())."""
        value = self.cleaned_data["expires"]
        return None if value == NEVER else int(value)
