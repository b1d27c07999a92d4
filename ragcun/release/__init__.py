"""Publishing a trained model: the model card and the Hub release."""
